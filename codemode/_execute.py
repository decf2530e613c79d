"""``execute``: run model-written code in the isolate with one capability, the API client.

The guest's every API call crosses the bridge into :class:`Executor`, which
checks the policy (allow/deny, read-only, call budget), binds and validates
the arguments, and sends the request upstream on the server's event loop.

The boundary, whatever the upstream or sandbox implementation:

* every bridge call counts against ``max_calls``, whatever its channel or fate;
* argument validation and requests stop at the run's deadline;
* a guest value never replaces a static header or an injected credential
  (:func:`~codemode._credentials.guest_override`);
* every body, header, error message and note that reaches the guest, and the run's outcome,
  is scrubbed (:mod:`codemode._boundary`) with the server's secrets plus the caller's own;
* each run takes a slot of an :class:`~codemode._admission.ExecutionLimiter` (server-wide
  limit, memory budget, fair share per client) and runs on threads of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from ._access import Caller
from ._admission import ExecutionLimiter
from ._boundary import scrub_body, scrub_outcome
from ._client import bind_arguments, resolve_operation, response_warning, stand_in
from ._credentials import Reserved, guest_override
from ._errors import CallError, ConfigError, ServerBusy, UpstreamError, UsageError
from ._ir import ApiSpec, Operation
from ._oppolicy import OperationPolicy
from ._render import signature
from ._request import build_request
from ._sandbox import RunOutcome, Sandbox, check_code
from ._sandbox._protocol import GUEST_MODULES
from ._scrub import LOG_FILTER, Scrubber
from ._settings import ExecuteSettings
from ._upstream import Upstream, UpstreamRequest, UpstreamResponse
from ._validation import ValidationTimeout, deadline

__all__ = ["CallRecord", "ExecuteReport", "Executor"]

MAX_RESPONSE_NOTES = 3  # response/spec mismatches reported per execution
# Limits whose CallLimitExceeded the code may catch and go on (a loop that pages until the budget is
# spent, then reports what it has): the run then succeeds, with a note. The time limit is not one of
# them: a run past timeout_seconds fails, caught or not.
CATCHABLE_LIMITS = ("max_calls=",)
DRY_RUN_BASE = "http://dry-run.invalid"  # dry runs never send; a spec without servers still works
HOST_FAILURE_NOTE = "the codemode server failed internally during this run (logged); results may be incomplete"
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
    busy: str | None = None  # no execution slot freed in time: the code never ran
    dry_run: bool = False
    limit_hits: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fatal_limits(self) -> list[str]:
        """Limits that fail the run even when the code caught the exception (see CATCHABLE_LIMITS)."""
        return [hit for hit in self.limit_hits if not hit.startswith(CATCHABLE_LIMITS)]

    @property
    def ok(self) -> bool:
        return (
            self.rejected is None
            and self.busy is None
            and self.outcome is not None
            and self.outcome.ok
            and not self.fatal_limits
        )


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
    """Runs code for one server. ``limiter`` may be shared by several servers (one per process);
    ``reserved`` and ``static_headers`` are what guest values may not override."""

    def __init__(
        self,
        spec: ApiSpec,
        sandbox: Sandbox,
        upstream: Upstream,
        settings: ExecuteSettings,
        *,
        base_url: str | None = None,
        scrubber: Scrubber | None = None,
        limiter: ExecutionLimiter | None = None,
        reserved: Reserved = frozenset(),
        static_headers: dict[str, str] | None = None,
        policy: OperationPolicy | None = None,
    ) -> None:
        self.spec = spec
        self.sandbox = sandbox
        self.upstream = upstream
        self.settings = settings
        self.base_url = base_url
        self.scrubber = scrubber or Scrubber(())
        self.limiter = limiter or ExecutionLimiter()
        self.reserved = reserved
        self.static_headers = dict(static_headers or {})
        self.policy = policy or OperationPolicy(
            spec, read_only=settings.read_only, allow=settings.allow, deny=settings.deny
        )
        self._spec_ops: tuple[list[dict[str, Any]], str] | None = None  # operation views, and as JSON
        self._threads: tuple[asyncio.AbstractEventLoop, anyio.CapacityLimiter] | None = None

    # -- policy --------------------------------------------------------------------------
    def allowed(self, op: Operation) -> str | None:
        """None when callable, else why not."""
        return self.policy.denial(op)

    # -- the run -------------------------------------------------------------------------
    async def _ready(self) -> None:
        """Build, compile and load the isolate if it is not ready yet (the first run after an install).

        This takes tens of seconds once and reports its progress; it never counts against
        ``timeout_seconds``, which starts with the run itself.
        """
        await anyio.to_thread.run_sync(self.sandbox.prepare)

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

    def _run_threads(self) -> anyio.CapacityLimiter:
        """Threads for isolates only (the policy check and everything else use anyio's default pool)."""
        loop = asyncio.get_running_loop()
        if self._threads is None or self._threads[0] is not loop:
            self._threads = (loop, anyio.CapacityLimiter(self.limiter.limits.max_concurrent))
        return self._threads[1]

    async def _run(
        self, report: ExecuteReport, client: str, run: Callable[[], RunOutcome], scrubber: Callable[[], Scrubber]
    ) -> ExecuteReport:
        """``scrubber`` is asked again after the run: a caller's source learns its secrets as it sends."""
        try:
            async with self.limiter.slot(client, self.settings.limits.memory_mb):
                with LOG_FILTER.current(scrubber()):
                    outcome = await anyio.to_thread.run_sync(run, limiter=self._run_threads())
        except ServerBusy as exc:
            report.busy = exc.message
            return report
        final = scrubber()
        report.outcome = scrub_outcome(final, outcome)
        report.notes = [final.scrub_text(n) for n in report.notes]
        return report

    async def execute(
        self, code: str, *, dry_run: bool = False, caller: Caller | None = None, client: str | None = None
    ) -> ExecuteReport:
        """Run ``code``; with a ``caller``, every call is also checked against (and made for) that caller.

        ``client`` names who asks (an MCP session) for the fair share; a caller's subject wins over it.
        """
        report = ExecuteReport(outcome=None, dry_run=dry_run)
        if not await self._checked(code, report):
            return report
        await self._ready()  # before the run's deadline starts
        loop = asyncio.get_running_loop()

        def run() -> RunOutcome:  # the bridge's deadline starts when the run does, not while it queues
            bridge = _Bridge(self, loop, report, dry_run, caller)
            return self.sandbox.run(code, bridge, inject=("api",), limits=self.settings.limits)

        return await self._run(report, _client_key(caller, client), run, lambda: _Bridge.scrubber_for(self, caller))

    async def run_search_code(
        self, code: str, *, client: str | None = None, caller: Caller | None = None
    ) -> ExecuteReport:
        """Code-mode search: the same isolate, with a read-only ``spec`` instead of ``api``. With a
        ``caller``, ``spec.operations`` marks what that caller may not call (as text search does),
        and the run counts against the caller's fair share."""
        report = ExecuteReport(outcome=None)
        if not await self._checked(code, report):
            return report
        await self._ready()
        budget = _SpecBudget(self.settings.max_spec_calls, lambda ch, payload: self._spec_bridge(ch, payload, caller))

        def run() -> RunOutcome:
            return self.sandbox.run(code, budget, inject=("spec",), limits=self.settings.limits)

        return await self._run(report, _client_key(caller, client), run, lambda: self.scrubber)

    # -- code-mode search ----------------------------------------------------------------
    def _spec_bridge(self, channel: str, payload: str, caller: Caller | None = None) -> tuple[bool, str]:
        if channel != "spec":
            return _err("not_allowed", "only `spec` is available in search code; use execute() to call the API")
        try:
            request = json.loads(payload)
            what = request.get("what")
        except (ValueError, AttributeError):
            return _err("usage", "malformed spec request")
        if what == "operations":
            if self._spec_ops is None:
                views = [self._op_view(op) for op in self.spec.operations]
                self._spec_ops = (views, json.dumps(views))
            views, text = self._spec_ops
            if caller is None:
                return True, text
            marked = []
            for op, view in zip(self.spec.operations, views, strict=True):
                why = caller.denial(op)
                marked.append({**view, "callable": why is None, **({"not_callable": why} if why else {})})
            return True, json.dumps(marked)
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


def _client_key(caller: Caller | None, client: str | None) -> str:
    """Whom an execution counts against for the fair share: the subject, else the session."""
    if caller is not None:
        return f"subject:{caller.subject}"
    return f"session:{client}" if client else "session:-"


class _SpecBudget:
    """The bridge of code-mode search: the spec channel, at most ``limit`` calls per run."""

    def __init__(self, limit: int, bridge: Callable[[str, str], tuple[bool, str]]) -> None:
        self.limit, self.bridge, self.calls = limit, bridge, 0
        self.lock = threading.Lock()

    def __call__(self, channel: str, payload: str) -> tuple[bool, str]:
        with self.lock:
            self.calls += 1
            over = self.calls > self.limit
        if over:
            return _err("limit", f"this search reached its spec call limit (max_spec_calls={self.limit})")
        return self.bridge(channel, payload)


class _Bridge:
    """The bridge of one execution: every guest API call comes through :meth:`__call__` (worker thread)."""

    def __init__(
        self, ex: Executor, loop: asyncio.AbstractEventLoop, report: ExecuteReport, dry_run: bool, caller: Caller | None
    ) -> None:
        self.ex, self.loop, self.report, self.dry_run, self.caller = ex, loop, report, dry_run, caller
        self.lock = threading.Lock()
        self.calls = 0  # every bridge call, whatever its channel or outcome
        # Wall-clock budget of the whole run. The isolate's epoch deadline only ticks while guest
        # code runs, so time spent validating and waiting on the upstream is bounded here.
        self.deadline = time.monotonic() + ex.settings.limits.timeout_seconds
        # Reserved names: the caller's own credentials when they bring them, else the server's.
        source = caller.credentials if caller is not None else None
        self.reserved: Reserved = ex.reserved if source is None else source.reserved()

    def __call__(self, channel: str, payload: str) -> tuple[bool, str]:
        try:
            return self._dispatch(channel, payload)
        except Exception as exc:  # noqa: BLE001 - the bridge boundary: anything must become an err result
            return self._host_failure(exc)

    def _host_failure(self, exc: Exception) -> tuple[bool, str]:
        """A bug or failure inside the host: logged with its (scrubbed) traceback, never an ApiError.

        The guest gets a ``RuntimeError`` that says so; the answer carries a note, so a caught one is
        still visible.
        """
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        log.error("internal error while handling an API call from guest code:\n%s", self.scrubber().scrub_text(trace))
        message = (
            f"internal error in the codemode server ({type(exc).__name__}) while handling this call; it is "
            "logged for the operator. This is not an answer from the API, and retrying will not help."
        )
        with self.lock:
            if HOST_FAILURE_NOTE not in self.report.notes:
                self.report.notes.append(HOST_FAILURE_NOTE)
        return _err("internal", message)

    @staticmethod
    def scrubber_for(ex: Executor, caller: Caller | None) -> Scrubber:
        """The server's scrubber plus the caller's own secrets."""
        creds = caller.credentials if caller is not None else None
        return ex.scrubber if creds is None else ex.scrubber.extended(creds.secrets())

    def scrubber(self) -> Scrubber:
        """Asked for each call: a caller's tokens may be refreshed during the run."""
        return self.scrubber_for(self.ex, self.caller)

    def _limit(self, hit: str, message: str) -> tuple[bool, str]:
        with self.lock:
            if hit not in self.report.limit_hits:
                self.report.limit_hits.append(hit)
        return _err("limit", message)

    def _timed_out(self, what: str = "") -> tuple[bool, str]:
        limit = f"timeout_seconds={self.ex.settings.limits.timeout_seconds}"
        return self._limit(limit, f"execution exceeded {limit}{what}")

    def _dispatch(self, channel: str, payload: str) -> tuple[bool, str]:
        ex, settings = self.ex, self.ex.settings
        with self.lock:
            self.calls += 1
            calls = self.calls
        if calls > settings.max_calls:
            limit = f"max_calls={settings.max_calls}"
            return self._limit(limit, f"this execution reached its API call limit ({limit})")
        if len(payload) > settings.max_call_bytes:
            return _err("usage", f"the call's arguments are {len(payload)} bytes, over "
                                 f"max_call_bytes={settings.max_call_bytes}")  # fmt: skip
        if channel == "spec":
            return ex._spec_bridge(channel, payload)
        if channel != "invoke":
            return _err("usage", f"unknown bridge channel {channel!r}")
        if self.deadline - time.monotonic() <= 0:
            return self._timed_out()
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
        base_url = (ex.base_url or DRY_RUN_BASE) if self.dry_run else ex.base_url
        try:
            with deadline(self.deadline):
                upstream_request = build_request(ex.spec, op, bind_arguments(op, args, kwargs), base_url=base_url)
        except ValidationTimeout:
            return self._timed_out(f" while validating the arguments of {op.label}")
        except CallError as exc:
            return _call_error(op, exc)
        except ConfigError as exc:
            return _err("api_error", exc.message, op=op.key)
        override = guest_override(upstream_request, self.reserved, ex.static_headers)
        if override is not None:
            return _err("not_allowed", f"api.{op.key}: {override}.", op=op.key)
        if self.dry_run:
            resp = op.success_response()
            self._record(op, "dry-run", started)
            return True, json.dumps(stand_in(ex.spec, resp.schema if resp else None))
        return self._send(op, replace(upstream_request, caller=self.caller, deadline=self.deadline), started)

    def _send(self, op: Operation, upstream_request: UpstreamRequest, started: float) -> tuple[bool, str]:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:  # validation may have used the rest: never send after the deadline
            return self._timed_out(f" before {op.label} was sent")
        future = asyncio.run_coroutine_threadsafe(self.ex.upstream.send(upstream_request), self.loop)
        try:
            response: UpstreamResponse = future.result(timeout=remaining)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self._record(op, "timeout", started)
            return self._timed_out(f" while waiting for {op.label}")
        except UpstreamError as exc:
            self._record(op, exc.code, started)
            scrubber = self.scrubber()
            body = self._error_body(scrub_body(scrubber, exc.body)) if exc.body is not None else None
            return _err("api_error", scrubber.scrub_text(exc.message), status=exc.status, body=body, op=op.key)
        self._record(op, response.status, started)
        scrubber = self.scrubber()
        if 300 <= response.status < 400:  # never followed; where it points (Location, body) stays on the host
            return _err("api_error", f"{op.label} answered HTTP {response.status}, a redirect, which is not "
                        f"followed (api.{op.key})", status=response.status, op=op.key)  # fmt: skip
        body = scrub_body(scrubber, response.body)
        if 200 <= response.status < 300:
            self._check_response(op, body, scrubber)
            return True, json.dumps(body, default=str)
        return _err("api_error", f"{op.label} failed with HTTP {response.status} (api.{op.key})",
                    status=response.status, body=self._error_body(body), op=op.key)  # fmt: skip

    def _error_body(self, body: Any) -> Any:
        """An error body as it is, or cut to ``max_error_body_chars`` of its JSON text."""
        cap = self.ex.settings.max_error_body_chars
        text = json.dumps(body, default=str) if not isinstance(body, str) else body
        return text[:cap] + "…[truncated]" if len(text) > cap else body

    def _record(self, op: Operation, status: int | str, started: float) -> None:
        ms = round((time.perf_counter() - started) * 1000, 1)
        with self.lock:
            self.report.calls.append(CallRecord(op.key, op.method.upper(), op.path, status, ms))

    def _check_response(self, op: Operation, body: Any, scrubber: Scrubber) -> None:
        if len(self.report.notes) >= MAX_RESPONSE_NOTES or not self.ex.settings.check_responses:
            return
        try:
            with deadline(self.deadline):
                note = response_warning(self.ex.spec, op, body)
        except ValidationTimeout:
            return  # a note is not worth the run's time
        if note is not None:
            note = scrubber.scrub_text(note)
            with self.lock:
                if note not in self.report.notes and len(self.report.notes) < MAX_RESPONSE_NOTES:
                    self.report.notes.append(note)
