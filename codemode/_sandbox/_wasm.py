"""The real sandbox: a fresh WebAssembly instance per run, deny-by-default.

One :class:`wasmtime.Engine`, one compiled component and one linker are shared;
every :meth:`WasmSandbox.run` gets a fresh ``Store`` and a fresh instance, so
nothing (globals, builtins, module attributes, memory) survives a run.

What the guest can reach: an empty ``WasiConfig`` (no files, no environment,
no arguments, no sockets, no stdio), clocks and random numbers, and the host
function ``host.call`` which only forwards the ``invoke`` and ``spec``
channels to the caller's :data:`Bridge`. Every WASI interface through which
the guest could wait is answered by the host itself (:mod:`._wasi`), so that
no wait outlives the run's deadline.

Limits: wall-clock time by epoch interruption (one ticker thread per sandbox,
stopped by :meth:`WasmSandbox.close`) and by the host's own waits, linear
memory by store limits, output/result size in the guest, code size before
anything runs. Traps never escape :meth:`run`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import wasmtime
from wasmtime.component import Component, Linker, Variant

from .._errors import SandboxError
from .._progress import Reporter
from ._build import load_component, make_engine
from ._protocol import (
    CHANNELS,
    Bridge,
    GuestError,
    RunOutcome,
    SandboxLimits,
    code_too_large,
    guest_options,
    limit_outcome,
    outcome_from_guest,
)
from ._wasi import WAIT_TIMEOUT, HostWasi

__all__ = ["WasmSandbox"]

logger = logging.getLogger("codemode.sandbox")

TICK_SECONDS = 0.01
HOST_INTERFACE = "codemode:sandbox/host"
_MIB = 1024 * 1024


class _Ticker:
    """The thread advancing an engine's epoch every ``TICK_SECONDS``.

    After :meth:`stop` it keeps ticking while runs are still in flight (their epoch deadlines
    depend on it), then ends.
    """

    def __init__(self, engine: wasmtime.Engine, busy: Callable[[], bool]) -> None:
        self._engine = engine
        self._busy = busy
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="codemode-epoch-ticker", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while True:
            if self._stop.wait(TICK_SECONDS):
                if not self._busy():
                    return
                time.sleep(TICK_SECONDS)
            self._engine.increment_epoch()


class _Isolate:
    """One prepared generation of the sandbox: engine, component, linker, host WASI, ticker."""

    def __init__(self, engine: wasmtime.Engine, component: Component, host_call: Callable[..., Variant]) -> None:
        self.engine, self.component = engine, component
        self.closing = threading.Event()  # set by close(): every host-side wait ends
        self.wasi = HostWasi(self.closing)
        self.linker = Linker(engine)
        self.linker.add_wasip2()
        self.wasi.install(self.linker, component, engine)
        with self.linker.root() as root, root.add_instance(HOST_INTERFACE) as host:
            host.add_func("call", host_call)
        self._active = 0
        self._lock = threading.Lock()
        self.ticker = _Ticker(engine, lambda: self._active > 0)

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1

    def close(self) -> None:
        self.closing.set()
        self.ticker.stop()


def _err(kind: str, message: str) -> Variant:
    return Variant(
        "err", json.dumps({"kind": kind, "message": message, "status": None, "body": None, "operation": None})
    )


class _State(threading.local):
    bridge: Bridge | None = None


class WasmSandbox:
    """Runs code in a fresh wasm isolate per call. Thread-safe.

    :meth:`close` ends every host-side wait in progress and stops the epoch ticker once the runs
    in flight have ended; a closed sandbox prepares itself again when it is next used.
    """

    def __init__(
        self, cache_dir: Path | None = None, limits: SandboxLimits | None = None, progress: Reporter | None = None
    ) -> None:
        self.cache_dir = cache_dir
        self.limits = limits or SandboxLimits()
        self.progress = progress  # where a first-time build/compile of the isolate reports its progress
        self._lock = threading.Lock()
        self._state = _State()
        self._isolate: _Isolate | None = None

    def __enter__(self) -> WasmSandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- setup -----------------------------------------------------------
    def prepare(self) -> None:
        """Build, compile and load the isolate (idempotent, thread-safe)."""
        self._prepared()

    def _prepared(self) -> _Isolate:
        isolate = self._isolate
        if isolate is not None:
            return isolate
        with self._lock:
            if self._isolate is None:
                start = time.perf_counter()
                engine = make_engine()
                component = load_component(engine, self.cache_dir, self.progress)
                self._isolate = _Isolate(engine, component, self._host_call)
                logger.info("wasm sandbox ready in %.1f ms", (time.perf_counter() - start) * 1e3)
            return self._isolate

    def close(self, timeout: float | None = None) -> None:
        """End every wait in progress and stop the ticker (after the runs in flight, up to ``timeout`` s)."""
        with self._lock:
            isolate, self._isolate = self._isolate, None
        if isolate is not None:
            isolate.close()
            isolate.ticker.thread.join(timeout)

    # -- the one host callback ---------------------------------------------
    def _host_call(self, _store: object, channel: str, payload: str) -> Variant:
        # An exception escaping a host callback becomes a guest trap and goes
        # through wasmtime-py's process-global LAST_EXCEPTION (not thread-safe),
        # so *everything* must become an `err` result here.
        bridge = self._state.bridge
        if bridge is None:
            return _err("internal", "no bridge is active for this run")
        if channel not in CHANNELS:
            return _err("not_allowed", f"unknown channel {channel!r}")
        try:
            ok, answer = bridge(channel, payload)
            if not isinstance(answer, str):
                raise TypeError(f"bridge returned {type(answer).__name__}, not str")
            return Variant("ok" if ok else "err", answer)
        except Exception as exc:  # noqa: BLE001 - the host-callback boundary (see above)
            # Type only: an exception's text may carry a request value or a credential.
            logger.error("sandbox bridge raised %s on channel %r", type(exc).__name__, channel)
            return _err("internal", f"host bridge failed on channel {channel!r}: {type(exc).__name__}")

    # -- running -------------------------------------------------------------
    def run(
        self,
        code: str,
        bridge: Bridge,
        *,
        inject: Sequence[str] = ("api",),
        limits: SandboxLimits | None = None,
    ) -> RunOutcome:
        limits = limits or self.limits
        rejected = code_too_large(code, limits)
        if rejected is not None:
            return rejected
        options = guest_options(inject, limits)
        isolate = self._prepared()
        start = time.perf_counter()
        store = wasmtime.Store(isolate.engine)
        store.set_wasi(wasmtime.WasiConfig())
        store.set_limits(memory_size=limits.memory_mb * _MIB)
        store.set_epoch_deadline(max(1, round(limits.timeout_seconds / TICK_SECONDS)))
        previous = self._state.bridge
        self._state.bridge = bridge
        isolate.wasi.begin(time.monotonic() + limits.timeout_seconds)
        try:
            with isolate.running():
                instance = isolate.linker.instantiate(store, isolate.component)
                func = instance.get_func(store, "run")
                if func is None:
                    raise SandboxError("the isolate has no `run` export", code="sandbox.broken")
                answer = func(store, code, options)
        except wasmtime.ExitTrap as exc:
            return limit_outcome(
                None, "SystemExit", f"the code exited the isolate (exit status {exc.code})", _ms(start)
            )
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            return _trap_outcome(exc, limits, _ms(start))
        finally:
            isolate.wasi.end()
            self._state.bridge = previous
            store.close()
        duration = _ms(start)
        if not isinstance(answer, Variant) or not isinstance(answer.payload, str) or answer.tag != "ok":
            # The guest runtime itself failed (possibly sabotaged by the code).
            detail = str(answer.payload)[:500] if isinstance(answer, Variant) else type(answer).__name__
            logger.warning("isolate runtime failed: %s", detail)
            return limit_outcome(None, "IsolateError", f"the sandbox runtime failed: {detail}", duration)
        try:
            outcome = outcome_from_guest(answer.payload, limits, duration)
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:
            logger.warning("isolate answered malformed JSON: %s", type(exc).__name__)
            return limit_outcome(None, "IsolateError", "the sandbox runtime returned a malformed answer", duration)
        if outcome.error is not None and outcome.error.type == "MemoryError":
            outcome = _memory_outcome(outcome, limits)
        return outcome


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def _trap_outcome(exc: wasmtime.Trap | wasmtime.WasmtimeError, limits: SandboxLimits, duration_ms: float) -> RunOutcome:
    code = exc.trap_code if isinstance(exc, wasmtime.Trap) else None
    text = str(exc)
    # wasmtime puts a wasm backtrace first and the cause ("wasm trap: ...") last.
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[-1] if lines else type(exc).__name__
    if code == wasmtime.TrapCode.INTERRUPT or "wasm trap: interrupt" in text or WAIT_TIMEOUT in text:
        return limit_outcome(
            "timeout_seconds",
            "TimeoutError",
            f"execution exceeded timeout_seconds={limits.timeout_seconds}",
            duration_ms,
        )
    if code == wasmtime.TrapCode.STACK_OVERFLOW or "stack overflow" in text or "call stack exhausted" in text:
        return limit_outcome(
            None, "RecursionError", "the isolate's call stack overflowed (wasm stack overflow)", duration_ms
        )
    if "memory" in text and ("limit" in text or "grow" in text or "allocation" in text):
        return _memory_outcome(limit_outcome(None, "MemoryError", "out of memory", duration_ms), limits)
    logger.warning("isolate trapped: %s", first)
    return limit_outcome(None, "IsolateTrap", f"the isolate stopped with a trap: {first}", duration_ms)


def _memory_outcome(outcome: RunOutcome, limits: SandboxLimits) -> RunOutcome:
    err = outcome.error
    assert err is not None
    note = f"memory limit reached: execution exceeded memory_mb={limits.memory_mb}"
    message = f"{err.message} ({note})" if err.message else note
    return RunOutcome(
        ok=False,
        stdout=outcome.stdout,
        stdout_truncated=outcome.stdout_truncated,
        result=None,
        error=GuestError(type=err.type, message=message, line=err.line, traceback=err.traceback),
        limit="memory_mb",
        duration_ms=outcome.duration_ms,
        notes=outcome.notes,
    )
