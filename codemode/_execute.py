"""``execute``: run model-written code in the isolate with one capability, the API client.

The guest's every API call crosses the bridge into :class:`Executor`, which
checks the policy (allow/deny, read-only, call budget), binds and validates
the arguments, and sends the request upstream on the server's event loop.
Nothing the guest sees carries a credential.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fnmatch
import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from ._access import Caller
from ._client import bind_arguments, resolve_operation, response_warning, stand_in
from ._errors import CallError, ConfigError, UpstreamError, UsageError
from ._ir import ApiSpec, Operation
from ._render import signature
from ._request import build_request
from ._sandbox import RunOutcome, Sandbox, check_code
from ._sandbox._protocol import GUEST_MODULES
from ._scrub import Scrubber
from ._settings import ExecuteSettings
from ._upstream import Upstream, UpstreamResponse

__all__ = ["CallRecord", "ExecuteReport", "Executor"]

MAX_RESPONSE_NOTES = 3  # response/spec mismatches reported per execution
DRY_RUN_BASE = "http://dry-run.invalid"  # dry runs never send; a spec without servers still works
log = logging.getLogger("codemode.execute")


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


# CallError codes the guest sees as PermissionError rather than TypeError.
NOT_ALLOWED_CODES = frozenset({"call.filled_param"})


def _call_error(op: Operation, exc: CallError) -> tuple[bool, str]:
    if exc.code in NOT_ALLOWED_CODES:
        return _err("not_allowed", exc.message, op=op.key)
    return _err("usage", f"{exc.message} Signature: {signature(op, max_optional=None)}", op=op.key)


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
    async def _checked(self, code: str, report: ExecuteReport) -> bool:
        """Size first (cheap), then the policy check off the event loop. False when rejected."""
        limits = self.settings.limits
        size = len(code.encode("utf-8", "replace"))
        if size > limits.max_code_bytes:
            report.rejected = f"the code is {size} bytes, over max_code_bytes={limits.max_code_bytes}."
            return False
        try:
            await anyio.to_thread.run_sync(lambda: check_code(code, allowed_modules=GUEST_MODULES))
        except UsageError as exc:
            report.rejected = exc.message
            return False
        except RecursionError:
            report.rejected = "the code is nested too deeply to check (simplify the expression)."
            return False
        return True

    async def execute(self, code: str, *, dry_run: bool = False, caller: Caller | None = None) -> ExecuteReport:
        """Run ``code``; with a ``caller``, every call is also checked against (and made for) that caller."""
        report = ExecuteReport(outcome=None, dry_run=dry_run)
        if not await self._checked(code, report):
            return report
        bridge = _Bridge(self, asyncio.get_running_loop(), report, dry_run, caller)
        report.outcome = await anyio.to_thread.run_sync(
            lambda: self.sandbox.run(code, bridge, inject=("api",), limits=self.settings.limits)
        )
        return report

    async def run_search_code(self, code: str) -> ExecuteReport:
        """Code-mode search: the same isolate, with a read-only ``spec`` instead of ``api``."""
        report = ExecuteReport(outcome=None)
        if not await self._checked(code, report):
            return report
        report.outcome = await anyio.to_thread.run_sync(
            lambda: self.sandbox.run(code, self._spec_bridge, inject=("spec",), limits=self.settings.limits)
        )
        return report

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


class _Bridge:
    """The bridge of one execution: every guest API call comes through :meth:`__call__` (worker thread)."""

    def __init__(
        self, ex: Executor, loop: asyncio.AbstractEventLoop, report: ExecuteReport, dry_run: bool, caller: Caller | None
    ) -> None:
        self.ex, self.loop, self.report, self.dry_run, self.caller = ex, loop, report, dry_run, caller
        self.lock = threading.Lock()
        # Wall-clock budget of the whole run. The isolate's epoch deadline only ticks while guest
        # code runs, so time spent waiting on the upstream is bounded here.
        self.deadline = time.monotonic() + ex.settings.limits.timeout_seconds

    def __call__(self, channel: str, payload: str) -> tuple[bool, str]:
        try:
            return self._dispatch(channel, payload)
        except Exception as exc:  # noqa: BLE001 - the bridge boundary: anything must become an err result
            log.error("execute bridge failed: %s", type(exc).__name__)  # type only: text may hold a value
            return _err("api_error", f"the server failed while handling this call ({type(exc).__name__})")

    def scrubber(self) -> Scrubber:
        """The server's scrubber plus the caller's own secrets (asked each time: tokens get refreshed)."""
        creds = self.caller.credentials if self.caller is not None else None
        return self.ex.scrubber if creds is None else self.ex.scrubber.extended(creds.secrets())

    def _limit(self, hit: str, message: str) -> tuple[bool, str]:
        with self.lock:
            if hit not in self.report.limit_hits:
                self.report.limit_hits.append(hit)
        return _err("limit", message)

    def _dispatch(self, channel: str, payload: str) -> tuple[bool, str]:
        ex, settings = self.ex, self.ex.settings
        if len(payload) > settings.max_call_bytes:
            return _err("usage", f"the call's arguments are {len(payload)} bytes, over "
                                 f"max_call_bytes={settings.max_call_bytes}")  # fmt: skip
        if channel == "spec":
            return ex._spec_bridge(channel, payload)
        if channel != "invoke":
            return _err("usage", f"unknown bridge channel {channel!r}")
        with self.lock:
            full = len(self.report.calls) >= settings.max_calls
        if full:
            limit = f"max_calls={settings.max_calls}"
            return self._limit(limit, f"this execution reached its API call limit ({limit})")
        remaining = self.deadline - time.monotonic()
        timeout = settings.limits.timeout_seconds
        if remaining <= 0:
            return self._limit(f"timeout_seconds={timeout}", f"execution exceeded timeout_seconds={timeout}")
        try:
            request = json.loads(payload)
            target = str(request["op"])
            args = list(request.get("args") or [])
            kwargs = dict(request.get("kwargs") or {})
        except (ValueError, KeyError, TypeError, RecursionError):
            return _err("usage", "malformed call from the guest client")
        try:
            op = resolve_operation(ex.spec, target, by_target=request.get("by") == "target")
        except CallError as exc:
            return _err("unknown_operation", exc.message)
        why = ex.allowed(op)
        if why is None and self.caller is not None:
            why = self.caller.denial(op)
        if why is not None:
            return _err("not_allowed", why, op=op.key)
        started = time.perf_counter()
        if self.dry_run:
            try:
                build_request(ex.spec, op, bind_arguments(op, args, kwargs), base_url=ex.base_url or DRY_RUN_BASE)
            except CallError as exc:
                return _call_error(op, exc)
            resp = op.success_response()
            self._record(op, "dry-run", started)
            return True, json.dumps(stand_in(ex.spec, resp.schema if resp else None))
        try:
            upstream_request = build_request(ex.spec, op, bind_arguments(op, args, kwargs), base_url=ex.base_url)
            upstream_request = replace(upstream_request, caller=self.caller)
        except CallError as exc:
            return _call_error(op, exc)
        except ConfigError as exc:
            return _err("api_error", exc.message, op=op.key)
        future = asyncio.run_coroutine_threadsafe(ex.upstream.send(upstream_request), self.loop)
        try:
            response: UpstreamResponse = future.result(timeout=remaining)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self._record(op, "timeout", started)
            limit = f"timeout_seconds={timeout}"
            return self._limit(limit, f"execution exceeded {limit} while waiting for {op.label}")
        except UpstreamError as exc:
            self._record(op, exc.code, started)
            return _err("api_error", self.scrubber().scrub_text(exc.message), op=op.key)
        self._record(op, response.status, started)
        body = self.scrubber().scrub_obj(response.body)
        if 200 <= response.status < 300:
            self._check_response(op, body)
            return True, json.dumps(body, default=str)
        text = json.dumps(body, default=str) if not isinstance(body, str) else body
        if len(text) > settings.max_error_body_chars:
            body = text[: settings.max_error_body_chars] + "…[truncated]"
        return _err("api_error", f"{op.label} failed with HTTP {response.status} (api.{op.key})",
                    status=response.status, body=body, op=op.key)  # fmt: skip

    def _record(self, op: Operation, status: int | str, started: float) -> None:
        ms = round((time.perf_counter() - started) * 1000, 1)
        with self.lock:
            self.report.calls.append(CallRecord(op.key, op.method.upper(), op.path, status, ms))

    def _check_response(self, op: Operation, body: Any) -> None:
        if len(self.report.notes) >= MAX_RESPONSE_NOTES or not self.ex.settings.check_responses:
            return
        note = response_warning(self.ex.spec, op, body)
        if note is not None:
            with self.lock:
                if note not in self.report.notes:
                    self.report.notes.append(note)
