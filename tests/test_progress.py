"""Progress of slow steps: events, the terminal (bar and plain lines), the hub, MCP notifications."""

from __future__ import annotations

import asyncio
import io
import itertools
import threading
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import Context, MCPServer

from codemode._progress import McpReporter, ProgressEvent, ProgressHub, TerminalReporter, step

HANG = 10.0  # bound on waits that would otherwise hang; never reached when things work


class Recorder:
    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []
        self.lock = threading.Lock()
        self.ticked = threading.Event()

    def emit(self, event: ProgressEvent) -> None:
        with self.lock:
            self.events.append(event)
        if event.kind == "tick":
            self.ticked.set()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def test_step_reports_start_advance_done() -> None:
    rec = Recorder()
    with step(rec, "embedding operations", total=10, heartbeat_s=0) as s:
        s.advance(4)
        s.advance(6)
    assert rec.kinds() == ["start", "advance", "advance", "done"]
    assert [e.done for e in rec.events] == [0, 4, 10, 10]
    assert rec.events[1].fraction == 0.4
    assert rec.events[1].text().startswith("embedding operations: 40% (4/10)")
    assert rec.events[-1].text().startswith("embedding operations: done in")


def test_a_failing_step_says_so_and_the_error_propagates() -> None:
    rec = Recorder()
    with pytest.raises(KeyError), step(rec, "building the isolate", heartbeat_s=0):
        raise KeyError("x")
    assert rec.kinds() == ["start", "failed"]
    assert "failed after" in rec.events[-1].text() and "KeyError" in rec.events[-1].text()


def test_heartbeat_ticks_while_a_step_makes_no_progress() -> None:
    rec = Recorder()
    with step(rec, "building the isolate", heartbeat_s=0.01):
        assert rec.ticked.wait(HANG), "no tick from a running step"
    kinds = rec.kinds()
    assert kinds[0] == "start" and kinds[-1] == "done" and "tick" in kinds
    n = len(rec.events)
    assert rec.ticked.wait(0) and len(rec.events) == n  # the heartbeat stopped with the step


def test_a_broken_reporter_never_breaks_the_work() -> None:
    class Broken:
        def emit(self, event: ProgressEvent) -> None:
            raise RuntimeError("reporter bug")

    with step(Broken(), "x", total=2, heartbeat_s=0) as s:
        s.advance()
    assert s.done == 2


def test_none_reporter_is_allowed() -> None:
    with step(None, "quiet", total=1, heartbeat_s=0) as s:
        s.advance()


def test_terminal_plain_lines_quiet_for_quick_steps() -> None:
    out = io.StringIO()
    term = TerminalReporter(out, tty=False, show_after_s=5)
    with step(term, "loading the spec", heartbeat_s=0):
        pass
    assert out.getvalue() == ""  # cached work stays quiet


def test_terminal_plain_lines_for_a_slow_step() -> None:
    out = io.StringIO()
    term = TerminalReporter(out, tty=False, show_after_s=0, line_every_s=0)
    with step(term, "embedding 3 operations", total=3, heartbeat_s=0) as s:
        s.advance(1)
        s.advance(2)
    lines = out.getvalue().splitlines()
    assert lines[0] == "codemode: embedding 3 operations…"
    assert "33% (1/3)" in lines[1]
    assert lines[-1].startswith("codemode: embedding 3 operations: done in")
    assert "\r" not in out.getvalue()


def test_terminal_shows_a_step_once_it_has_run_a_while() -> None:
    out = io.StringIO()
    term = TerminalReporter(out, tty=False, show_after_s=0.5)
    term.emit(ProgressEvent("building the isolate", "start"))
    term.emit(ProgressEvent("building the isolate", "tick", elapsed=0.2))
    assert out.getvalue() == ""
    term.emit(ProgressEvent("building the isolate", "tick", elapsed=1.0))
    term.emit(ProgressEvent("building the isolate", "done", elapsed=9.0))
    assert out.getvalue().splitlines() == [
        "codemode: building the isolate…",
        "codemode: building the isolate: done in 9 s",
    ]


def test_terminal_failure_is_always_shown() -> None:
    out = io.StringIO()
    TerminalReporter(out, tty=False, show_after_s=99).emit(ProgressEvent("x", "failed", elapsed=0.1, detail="Boom"))
    assert "x: failed after 0.1 s (Boom)" in out.getvalue()


def test_terminal_bar_on_a_tty() -> None:
    out = io.StringIO()
    term = TerminalReporter(out, tty=True, show_after_s=0)
    term.emit(ProgressEvent("embedding", "advance", done=5, total=10, elapsed=2))
    term.emit(ProgressEvent("isolate", "tick", elapsed=3))  # indeterminate
    term.emit(ProgressEvent("embedding", "done", done=10, total=10, elapsed=4))
    text = out.getvalue()
    assert "\r\x1b[2Kcodemode: embedding [" in text and " 50% (5/10)" in text
    assert "█" in text
    assert text.endswith("codemode: embedding: done in 4 s\n")


def test_terminal_survives_a_closed_stream() -> None:
    out = io.StringIO()
    out.close()
    TerminalReporter(out, tty=False, show_after_s=0).emit(ProgressEvent("x", "start"))


def test_hub_fans_out_and_catches_up_late_subscribers() -> None:
    first = Recorder()
    hub = ProgressHub(first)
    with step(hub, "building the isolate", heartbeat_s=0) as s:
        assert [e.step for e in hub.running()] == ["building the isolate"]
        late = Recorder()
        with hub.subscribed(late):
            assert late.kinds() == ["start"]  # told about the step already running
            s.advance()
        s.advance()
    assert late.kinds() == ["start", "advance"]  # nothing after it left
    assert first.kinds() == ["start", "advance", "advance", "done"]
    assert hub.running() == [] and hub.current("building the isolate") is None


class FakeCtx:
    def __init__(self) -> None:
        self.progress: list[tuple[float, float | None, str | None]] = []
        self.logs: list[tuple[str, str]] = []

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        self.progress.append((progress, total, message))

    async def log(self, level: str, data: Any, *, logger_name: str | None = None) -> None:
        self.logs.append((level, str(data)))


async def test_mcp_reporter_sends_increasing_progress_from_any_thread() -> None:
    ctx = FakeCtx()
    reporter = McpReporter(ctx)

    def work() -> None:
        with step(reporter, "embedding", total=4, heartbeat_s=0) as s:
            reporter.emit(ProgressEvent("embedding", "tick", done=0, total=4))  # no progress: still increases
            s.advance(2)
            reporter.emit(ProgressEvent("embedding", "tick", done=2, total=4))
            s.advance(2)

    await asyncio.to_thread(work)
    for _ in range(100):
        if len(ctx.progress) == 6:
            break
        await asyncio.sleep(0.01)
    values = [p for p, _, _ in ctx.progress]
    assert len(values) == 6
    assert all(b > a for a, b in itertools.pairwise(values)), values
    assert values[-1] == 4 and all(t == 4 for _, t, _ in ctx.progress)
    assert ctx.progress[0][2] == "embedding…"
    assert [level for level, _ in ctx.logs] == ["info", "info"]  # start and done lines only


async def test_mcp_reporter_without_total_uses_elapsed_seconds() -> None:
    ctx = FakeCtx()
    reporter = McpReporter(ctx, log_lines=False)
    for elapsed in (0.0, 0.0, 1.0, 2.0):
        reporter.emit(ProgressEvent("isolate", "tick", elapsed=elapsed))
    reporter.emit(ProgressEvent("isolate", "done", elapsed=3.0))
    await reporter.flush()
    values = [p for p, _, _ in ctx.progress]
    assert all(b > a for a, b in itertools.pairwise(values)), values
    assert ctx.logs == []


async def test_mcp_progress_keeps_increasing_across_the_steps_of_one_call() -> None:
    """A first execute waits for two steps (build, then compile) on one progress token: the second step's
    progress went back to 0.001 (MCP: progress MUST increase). Each step counts on from where the call
    stood, a total shifted likewise; steps overlapping in time still never go back."""
    ctx = FakeCtx()
    reporter = McpReporter(ctx, log_lines=False)
    for elapsed in (0.0, 1.0, 2.0):
        reporter.emit(ProgressEvent("build", "tick", elapsed=elapsed))
    reporter.emit(ProgressEvent("build", "done", elapsed=2.5))
    for elapsed in (0.0, 1.0):
        reporter.emit(ProgressEvent("compile", "tick", elapsed=elapsed))
    reporter.emit(ProgressEvent("compile", "done", elapsed=1.5))
    reporter.emit(ProgressEvent("embed", "start", done=0, total=10))
    reporter.emit(ProgressEvent("embed", "advance", done=5, total=10))
    reporter.emit(ProgressEvent("other", "tick", elapsed=0.0))  # overlapping: starts where the call stands
    reporter.emit(ProgressEvent("embed", "done", done=10, total=10))
    await reporter.flush()
    values = [p for p, _, _ in ctx.progress]
    assert len(values) == 11
    assert all(b > a for a, b in itertools.pairwise(values)), values
    build_end, compile_end, embed_half = values[3], values[6], values[8]
    assert 2 <= build_end < 3 and values[4] > build_end and 1 <= compile_end - build_end < 2
    assert ctx.progress[8][1] == pytest.approx(compile_end + 10) and embed_half == pytest.approx(compile_end + 5)
    assert values[-1] == pytest.approx(compile_end + 10)


async def test_mcp_progress_reaches_a_real_client() -> None:
    """A tool that waits for a background step forwards its progress to the calling client."""
    hub = ProgressHub()
    release = threading.Event()

    def background() -> None:
        with step(hub, "building the isolate", total=3, heartbeat_s=0) as s:
            for _ in range(3):
                release.wait(HANG)
                s.advance()

    server = MCPServer("progress-test")

    @server.tool()
    async def wait_for_build(ctx: Context) -> str:
        reporter = McpReporter(ctx, log_lines=False)
        with hub.subscribed(reporter):
            thread = threading.Thread(target=background)
            thread.start()
            release.set()
            await asyncio.to_thread(thread.join, HANG)
        await reporter.flush()
        await asyncio.sleep(0.05)  # let the thread-submitted notifications go out before the result
        return "ready"

    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(server) as client:
        result = await client.call_tool("wait_for_build", {}, progress_callback=on_progress)
    assert not result.is_error
    assert seen, "the client received no progress notification"
    assert seen[-1][0] == 3 and seen[-1][1] == 3
    assert any(m and m.startswith("building the isolate") for _, _, m in seen)


def test_isolate_build_reports_its_steps(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first build reports "building the isolate"; the next call finds it cached and reports nothing."""
    from codemode._sandbox import _build

    def fake_componentize(out: Any) -> None:
        out.write_bytes(b"\0asm")

    monkeypatch.setattr(_build, "_componentize", fake_componentize)
    rec = Recorder()
    path = _build.ensure_wasm(tmp_path, progress=rec)
    assert path.read_bytes() == b"\0asm"
    assert [(e.step, e.kind) for e in rec.events if e.kind != "tick"] == [
        (_build.BUILD_STEP, "start"),
        (_build.BUILD_STEP, "done"),
    ]
    again = Recorder()
    assert _build.ensure_wasm(tmp_path, progress=again) == path and again.events == []
