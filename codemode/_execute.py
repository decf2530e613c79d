"""``execute``: run model-written code in the isolate with one capability, the API client.

The guest's every API call crosses the bridge into :class:`Executor`, which
checks the policy (allow/deny, read-only, call budget), binds and validates
the arguments, and sends the request upstream on the server's event loop.
Nothing the guest sees carries a credential.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from ._client import bind_arguments, build_request, resolve_operation, response_warning, stand_in
from ._errors import CallError, ConfigError, UpstreamError, UsageError
from ._ir import ApiSpec, Operation
from ._render import signature
from ._sandbox import RunOutcome, Sandbox, check_code
from ._sandbox._protocol import GUEST_MODULES
from ._scrub import Scrubber
from ._settings import ExecuteSettings
from ._upstream import Upstream, UpstreamResponse

__all__ = ["CallRecord", "ExecuteReport", "Executor"]

MAX_RESPONSE_NOTES = 3  # response/spec mismatches reported per execution


@dataclass(frozen=True, slots=True)
class CallRecord:
    operation: str
    method: str
    path: str
    status: int | str
    ms: float

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.operation, "method": self.method, "path": self.path, "status": self.status, "ms": self.ms}


@dataclass
class ExecuteReport:
    outcome: RunOutcome | None
    calls: list[CallRecord] = field(default_factory=list)
    rejected: str | None = None  # the policy check's message, when the code never ran
    dry_run: bool = False
    limit_hits: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rejected is None and self.outcome is not None and self.outcome.ok and not self.limit_hits


def _err(
    kind: str, message: str, *, status: int | None = None, body: Any = None, op: str | None = None
) -> tuple[bool, str]:
    return False, json.dumps({"kind": kind, "message": message, "status": status, "body": body, "operation": op})


class Executor:
    def __init__(
        self,
        spec: ApiSpec,
        sandbox: Sandbox,
        upstream: Upstream,
        settings: ExecuteSettings,
        *,
        base_url: str | None = None,
        scrubber: Scrubber | None = None,
    ) -> None:
        self.spec = spec
        self.sandbox = sandbox
        self.upstream = upstream
        self.settings = settings
        self.base_url = base_url
        self.scrubber = scrubber or Scrubber(())
        self._spec_ops: str | None = None

    # -- policy --------------------------------------------------------------------------
    def _matches(self, op: Operation, patterns: tuple[str, ...]) -> bool:
        names = [op.key, op.operation_id or "", op.label]
        return any(fnmatch.fnmatchcase(n, pat) for pat in patterns for n in names if n)

    def allowed(self, op: Operation) -> str | None:
        """None when callable, else why not."""
        if self.settings.read_only and not op.read_only:
            return f"api.{op.key} ({op.label}) is a write operation and this server is read-only"
        if self.settings.allow and not self._matches(op, self.settings.allow):
            return f"api.{op.key} ({op.label}) is not in this server's allow-list"
        if self._matches(op, self.settings.deny):
            return f"api.{op.key} ({op.label}) is denied by this server's configuration"
        return None

    # -- the run -------------------------------------------------------------------------
    async def execute(self, code: str, *, dry_run: bool = False) -> ExecuteReport:
        report = ExecuteReport(outcome=None, dry_run=dry_run)
        try:
            check_code(code, allowed_modules=GUEST_MODULES)
        except UsageError as exc:
            report.rejected = exc.message
            return report
        loop = asyncio.get_running_loop()
        bridge = self._bridge(loop, report, dry_run)
        report.outcome = await anyio.to_thread.run_sync(
            lambda: self.sandbox.run(code, bridge, inject=("api",), limits=self.settings.limits)
        )
        return report

    async def run_search_code(self, code: str) -> ExecuteReport:
        """Code-mode search: the same isolate, with a read-only ``spec`` instead of ``api``."""
        report = ExecuteReport(outcome=None)
        try:
            check_code(code, allowed_modules=GUEST_MODULES)
        except UsageError as exc:
            report.rejected = exc.message
            return report
        report.outcome = await anyio.to_thread.run_sync(
            lambda: self.sandbox.run(code, self._spec_bridge, inject=("spec",), limits=self.settings.limits)
        )
        return report

    def _bridge(
        self, loop: asyncio.AbstractEventLoop, report: ExecuteReport, dry_run: bool
    ) -> Callable[[str, str], tuple[bool, str]]:
        lock = threading.Lock()

        def bridge(channel: str, payload: str) -> tuple[bool, str]:
            if channel == "spec":
                return self._spec_bridge(channel, payload)
            if channel != "invoke":
                return _err("usage", f"unknown bridge channel {channel!r}")
            with lock:
                if len(report.calls) >= self.settings.max_calls:
                    hit = f"max_calls={self.settings.max_calls}"
                    if hit not in report.limit_hits:
                        report.limit_hits.append(hit)
                    return _err(
                        "limit", f"this execution reached its API call limit (max_calls={self.settings.max_calls})"
                    )
            try:
                request = json.loads(payload)
                target = str(request["op"])
                args = list(request.get("args") or [])
                kwargs = dict(request.get("kwargs") or {})
            except (ValueError, KeyError, TypeError):
                return _err("usage", "malformed call from the guest client")
            try:
                op = resolve_operation(self.spec, target, by_target=request.get("by") == "target")
            except CallError as exc:
                return _err("unknown_operation", exc.message)
            why = self.allowed(op)
            if why is not None:
                return _err("not_allowed", why, op=op.key)
            try:
                bound = bind_arguments(op, args, kwargs)
                upstream_request = build_request(self.spec, op, bound, base_url=self.base_url)
            except CallError as exc:
                return _err("usage", f"{exc.message} Signature: {signature(op, max_optional=None)}", op=op.key)
            except ConfigError as exc:
                return _err("api_error", exc.message, op=op.key)
            started = time.perf_counter()
            if dry_run:
                resp = op.success_response()
                value = stand_in(self.spec, resp.schema if resp else None)
                self._record(report, lock, op, "dry-run", started)
                return True, json.dumps(value)
            try:
                future = asyncio.run_coroutine_threadsafe(self.upstream.send(upstream_request), loop)
                response: UpstreamResponse = future.result()
            except UpstreamError as exc:
                self._record(report, lock, op, exc.code, started)
                return _err("api_error", self.scrubber.scrub_text(exc.message), op=op.key)
            self._record(report, lock, op, response.status, started)
            if 200 <= response.status < 300:
                self._check_response(report, lock, op, response.body)
                try:
                    return True, json.dumps(response.body)
                except (TypeError, ValueError):
                    return True, json.dumps(str(response.body))
            body = response.body
            text = json.dumps(body) if not isinstance(body, str) else body
            if len(text) > self.settings.max_error_body_chars:
                body = text[: self.settings.max_error_body_chars] + "…[truncated]"
            return _err(
                "api_error",
                f"{op.label} failed with HTTP {response.status} (api.{op.key})",
                status=response.status,
                body=body,
                op=op.key,
            )

        return bridge

    def _check_response(self, report: ExecuteReport, lock: threading.Lock, op: Operation, body: Any) -> None:
        if len(report.notes) >= MAX_RESPONSE_NOTES or not self.settings.check_responses:
            return
        note = response_warning(self.spec, op, body)
        if note is not None:
            with lock:
                if note not in report.notes:
                    report.notes.append(note)

    def _record(
        self, report: ExecuteReport, lock: threading.Lock, op: Operation, status: int | str, started: float
    ) -> None:
        with lock:
            report.calls.append(
                CallRecord(op.key, op.method.upper(), op.path, status, round((time.perf_counter() - started) * 1000, 1))
            )

    # -- code-mode search ----------------------------------------------------------------
    def _spec_bridge(self, channel: str, payload: str) -> tuple[bool, str]:
        if channel != "spec":
            return _err("not_allowed", "only `spec` is available in search code; use execute() to call the API")
        try:
            request = json.loads(payload)
            what = request.get("what")
        except (ValueError, AttributeError):
            return _err("usage", "malformed spec request")
        if what == "operations":
            if self._spec_ops is None:
                self._spec_ops = json.dumps([self._op_view(op) for op in self.spec.operations])
            return True, self._spec_ops
        if what == "schemas":
            return True, json.dumps(sorted(self.spec.schemas))
        if what == "schema":
            name = str(request.get("name"))
            if name not in self.spec.schemas:
                return _err("usage", f"no schema named {name!r}")
            return True, json.dumps(self.spec.schemas[name])
        if what == "info":
            s = self.spec
            return True, json.dumps({"title": s.title, "version": s.version, "openapi": s.spec_version,
                                     "servers": list(s.servers), "operations": len(s.operations)})  # fmt: skip
        return _err("usage", f"unknown spec request {what!r}")

    @staticmethod
    def _op_view(op: Operation) -> dict[str, Any]:
        return {
            "name": f"api.{op.key}", "method": op.method.upper(), "path": op.path, "operation_id": op.operation_id,
            "summary": op.summary, "tags": list(op.tags), "deprecated": op.deprecated,
            "params": [{"name": p.py_name, "in": p.location, "required": p.required} for p in op.params],
            "signature": signature(op),
        }  # fmt: skip
