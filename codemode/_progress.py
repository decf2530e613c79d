"""Progress of slow steps: one seam for "a step that may take more than 2 s".

A slow step (building the isolate, embedding a spec's operations, parsing a big spec)
is wrapped in :func:`step`::

    with step(reporter, "embedding 1,223 operations", total=1223) as s:
        for batch in batches:
            ...
            s.advance(len(batch))

and emits :class:`ProgressEvent`\\ s to a :class:`Reporter` (one method, ``emit``).
While a step runs, a heartbeat emits a ``tick`` every ``heartbeat_s`` seconds, so a
step with no measurable progress (a subprocess) is never silent.

Reporters:

* :class:`NullReporter` drops everything (the default for library calls).
* :class:`TerminalReporter` draws a bar on a terminal and writes plain lines
  otherwise (a log file, Claude Desktop's server log), on stderr. Steps that end
  within ``show_after_s`` are never shown, so cached work stays quiet.
* :class:`McpReporter` turns events into MCP ``notifications/progress`` for one
  tool call (which resets the client's request timeout) and, at the start and
  end of a step, a ``notifications/message`` log line when the client asked
  for log messages.
* :class:`ProgressHub` fans events out to the reporters subscribed at the time,
  and remembers which steps are running, so a tool call that starts waiting
  for a step half-way through still learns about it.

Emitting never raises: a reporter that fails is logged and ignored, because
progress must never break the work it reports on.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import TracebackType
from typing import IO, Any, Literal, Protocol, runtime_checkable

__all__ = [
    "HEARTBEAT_S",
    "McpReporter",
    "NullReporter",
    "ProgressEvent",
    "ProgressHub",
    "Reporter",
    "Step",
    "TerminalReporter",
    "step",
]

log = logging.getLogger("codemode.progress")

HEARTBEAT_S = 1.0  # a running step emits a tick at least this often
SHOW_AFTER_S = 0.5  # the terminal shows a step only once it has run this long
LINE_EVERY_S = 10.0  # plain-line mode: at most one progress line per this many seconds (besides start/end)
BAR_WIDTH = 24
REDRAW_EVERY_S = 0.1

EventKind = Literal["start", "advance", "tick", "done", "failed"]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One thing that happened to a step. ``done``/``total`` are in the step's own unit."""

    step: str
    kind: EventKind
    done: float = 0.0
    total: float | None = None
    elapsed: float = 0.0
    detail: str = ""  # the error on ``failed``

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))

    @property
    def finished(self) -> bool:
        return self.kind in ("done", "failed")

    def text(self) -> str:
        """One line for people: ``embedding operations: 45% (550/1,223), 6 s``."""
        secs = f"{self.elapsed:.0f} s" if self.elapsed >= 1 else f"{self.elapsed:.1f} s"
        if self.kind == "done":
            return f"{self.step}: done in {secs}"
        if self.kind == "failed":
            return f"{self.step}: failed after {secs}" + (f" ({self.detail})" if self.detail else "")
        if self.kind == "start":
            return f"{self.step}…"
        frac = self.fraction
        if frac is not None and self.total is not None:
            return f"{self.step}: {frac:.0%} ({self.done:,.0f}/{self.total:,.0f}), {secs}"
        return f"{self.step}: {secs}"


@runtime_checkable
class Reporter(Protocol):
    """Receives progress events, from any thread. Must not block for long; must not raise."""

    def emit(self, event: ProgressEvent) -> None: ...


class NullReporter:
    """Reports nothing."""

    def emit(self, event: ProgressEvent) -> None:
        return None


def _safe_emit(reporter: Reporter, event: ProgressEvent) -> None:
    try:
        reporter.emit(event)
    except Exception:
        log.warning("progress reporter %s failed on %s", type(reporter).__name__, event.kind, exc_info=True)


class Step:
    """A running step: :meth:`advance` it; use it as a context manager (see :func:`step`)."""

    def __init__(
        self, reporter: Reporter, name: str, total: float | None = None, *, heartbeat_s: float = HEARTBEAT_S
    ) -> None:
        self.name = name
        self.total = total
        self.done = 0.0
        self._reporter = reporter
        self._heartbeat_s = heartbeat_s
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def _event(self, kind: EventKind, detail: str = "") -> ProgressEvent:
        return ProgressEvent(self.name, kind, self.done, self.total, self.elapsed, detail)

    def advance(self, n: float = 1.0) -> None:
        """Count ``n`` more units done."""
        with self._lock:
            self.done += n
            event = self._event("advance")
        _safe_emit(self._reporter, event)

    def __enter__(self) -> Step:
        self._started = time.monotonic()
        _safe_emit(self._reporter, self._event("start"))
        if self._heartbeat_s > 0:
            self._thread = threading.Thread(target=self._beat, name=f"codemode-progress:{self.name}", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            with self._lock:
                event = self._event("tick")
            _safe_emit(self._reporter, event)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc is None:
            with self._lock:
                if self.total is not None:
                    self.done = self.total
            _safe_emit(self._reporter, self._event("done"))
        else:
            _safe_emit(self._reporter, self._event("failed", type(exc).__name__))


def step(reporter: Reporter | None, name: str, total: float | None = None, *, heartbeat_s: float = HEARTBEAT_S) -> Step:
    """A step reporting to ``reporter`` (``None``: nowhere, and no heartbeat). Use as ``with step(...) as s:``."""
    if reporter is None:
        return Step(NullReporter(), name, total, heartbeat_s=0)
    return Step(reporter, name, total, heartbeat_s=heartbeat_s)


class TerminalReporter:
    """A bar on a terminal, plain lines otherwise; on stderr unless ``stream`` is given.

    Steps that finish within ``show_after_s`` print nothing (cached work stays quiet).
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        tty: bool | None = None,
        show_after_s: float = SHOW_AFTER_S,
        line_every_s: float = LINE_EVERY_S,
        prefix: str = "codemode: ",
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self._stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        self._show_after = show_after_s
        self._line_every = line_every_s
        self._prefix = prefix
        self._lock = threading.Lock()
        self._shown: dict[str, float] = {}  # step -> when its last line was written (monotonic)
        self._last_draw = 0.0
        self._bar_open = False

    def emit(self, event: ProgressEvent) -> None:
        with self._lock:
            if self.tty:
                self._emit_tty(event)
            else:
                self._emit_plain(event)

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not stop the work
            pass

    def _emit_plain(self, event: ProgressEvent) -> None:
        name, now = event.step, time.monotonic()
        if event.finished:
            if name in self._shown or event.kind == "failed":
                self._write(f"{self._prefix}{event.text()}\n")
            self._shown.pop(name, None)
            return
        if name not in self._shown:
            if event.elapsed < self._show_after and event.kind != "start":
                return
            if event.kind == "start" and self._show_after > 0:
                return  # wait: a quick step never prints
            start = replace(event, kind="start")
            self._write(f"{self._prefix}{start.text()}\n")
            self._shown[name] = now
            return
        if now - self._shown[name] >= self._line_every:
            self._write(f"{self._prefix}{event.text()}\n")
            self._shown[name] = now

    def _bar(self, event: ProgressEvent) -> str:
        frac = event.fraction
        secs = f"{event.elapsed:.0f} s"
        if frac is None:  # indeterminate: a block bouncing along with time
            pos = int(event.elapsed * 4) % (2 * BAR_WIDTH - 2)
            pos = pos if pos < BAR_WIDTH else 2 * BAR_WIDTH - 2 - pos
            bar = " " * pos + "█" + " " * (BAR_WIDTH - pos - 1)
            return f"{self._prefix}{event.step} [{bar}] {secs}"
        filled = round(frac * BAR_WIDTH)
        bar = "█" * filled + "·" * (BAR_WIDTH - filled)
        assert event.total is not None
        return f"{self._prefix}{event.step} [{bar}] {frac:4.0%} ({event.done:,.0f}/{event.total:,.0f}) {secs}"

    def _emit_tty(self, event: ProgressEvent) -> None:
        name, now = event.step, time.monotonic()
        if event.finished:
            if name in self._shown or event.kind == "failed":
                self._write(f"\r\x1b[2K{self._prefix}{event.text()}\n")
            self._shown.pop(name, None)
            self._bar_open = False
            return
        if name not in self._shown and event.elapsed < self._show_after:
            return
        if name in self._shown and now - self._last_draw < REDRAW_EVERY_S:
            return
        self._shown[name] = now
        self._last_draw = now
        self._write(f"\r\x1b[2K{self._bar(event)}")
        self._bar_open = True


def _next_progress(last: float, event: ProgressEvent) -> float:
    """MCP progress must increase with every notification: ``done`` when it moved, else a nudge.

    With a known total the nudges never reach it; without one, elapsed seconds are the progress.
    """
    if event.total is None:
        return max(last + 1e-3, round(event.elapsed, 3))
    target = event.done if event.done > last else last + (event.total - last) * 1e-3
    if target >= event.total:  # only the step's end reaches the total
        target = last + (event.total - last) / 2
    return target if target > last else last + 1e-6


class McpReporter:
    """Progress of the steps one MCP tool call waits for, sent to that call's client.

    Build it inside the tool call (it captures the running event loop); emit from any
    thread. ``ctx`` is the SDK's tool ``Context``: progress goes out as
    ``notifications/progress`` on the call's progress token (nothing when the client sent
    none), and start/end lines as ``notifications/message`` when ``log_lines`` is set.
    """

    def __init__(self, ctx: Any, *, log_lines: bool = True) -> None:
        self._ctx = ctx
        self._loop = asyncio.get_running_loop()
        self._log_lines = log_lines
        self._last: dict[str, float] = {}  # each running step's own progress
        self._base: dict[str, float] = {}  # where the call's progress stood when each running step started
        self._sent = 0.0  # the call's progress, as last sent
        self._lock = threading.Lock()
        self._pending: set[asyncio.Future[None]] = set()
        self._order = asyncio.Lock()  # FIFO: notifications leave in the order they were emitted

    def emit(self, event: ProgressEvent) -> None:
        with self._lock:
            # One call has one progress token, and MCP progress must increase on it across every step
            # the call waits for (the isolate's build, then its compile): each step counts on from
            # where the call's progress stood when the step started, its total shifted likewise.
            base = self._base.setdefault(event.step, self._sent)
            if event.finished:
                own = event.total if event.total is not None else max(self._last.get(event.step, 0) + 1e-3, 1.0)
                self._last.pop(event.step, None)
                self._base.pop(event.step, None)
            else:
                own = _next_progress(self._last.get(event.step, 0.0), event)
                self._last[event.step] = own
            progress = max(base + own, self._sent + 1e-6)
            total = base + event.total if event.total is not None else None
            if total is not None and total < progress:
                total = None  # steps overlapping in time: the count goes on, without a total it would pass
            self._sent = progress
        self._submit(self._send(event, progress, total))

    async def _send(self, event: ProgressEvent, progress: float, total: float | None) -> None:
        async with self._order:
            await self._send_now(event, progress, total)

    async def _send_now(self, event: ProgressEvent, progress: float, total: float | None) -> None:
        try:
            await self._ctx.report_progress(progress, total, event.text())
            if self._log_lines and event.kind in ("start", "done", "failed"):
                level = "warning" if event.kind == "failed" else "info"
                with warnings.catch_warnings():  # the logging capability is deprecated in 2026-07-28
                    warnings.simplefilter("ignore")
                    await self._ctx.log(level, event.text(), logger_name="codemode")
        except Exception:
            log.debug("could not send progress to the client", exc_info=True)

    def _submit(self, coro: Any) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            task = self._loop.create_task(coro)
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return
        if self._loop.is_closed():
            coro.close()
            return
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def flush(self) -> None:
        """Wait for the notifications already emitted from the loop's own thread."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


class ProgressHub:
    """A reporter that forwards to every subscribed reporter and remembers running steps."""

    def __init__(self, *reporters: Reporter) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Reporter] = list(reporters)
        self._running: dict[str, ProgressEvent] = {}

    def emit(self, event: ProgressEvent) -> None:
        with self._lock:
            if event.finished:
                self._running.pop(event.step, None)
            else:
                self._running[event.step] = event
            subscribers = list(self._subscribers)
        for sub in subscribers:
            _safe_emit(sub, event)

    def running(self) -> list[ProgressEvent]:
        """The latest event of every step that has started and not finished."""
        with self._lock:
            return list(self._running.values())

    def current(self, name: str) -> ProgressEvent | None:
        with self._lock:
            return self._running.get(name)

    def add(self, reporter: Reporter) -> None:
        with self._lock:
            self._subscribers.append(reporter)

    def remove(self, reporter: Reporter) -> None:
        with self._lock:
            if reporter in self._subscribers:
                self._subscribers.remove(reporter)

    @contextmanager
    def subscribed(self, reporter: Reporter) -> Iterator[Reporter]:
        """Forward events to ``reporter`` inside the block; it first hears of the steps already running."""
        with self._lock:
            self._subscribers.append(reporter)
            catch_up = [replace(e, kind="start") for e in self._running.values()]
        for event in catch_up:
            _safe_emit(reporter, event)
        try:
            yield reporter
        finally:
            self.remove(reporter)
