"""The wasm isolate (real WasmSandbox) and its in-process fake LocalSandbox."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codemode._sandbox import (
    GUEST_MODULES,
    LocalSandbox,
    RunOutcome,
    SandboxLimits,
    WasmSandbox,
    _build,
    default_cache_dir,
)


def noop_bridge(channel: str, payload: str) -> tuple[bool, str]:
    return True, "null"


class RecordingBridge:
    """Answers `invoke` with an echo, or with the error given for an op."""

    def __init__(self, errors: dict[str, dict[str, Any]] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.errors = errors or {}

    def __call__(self, channel: str, payload: str) -> tuple[bool, str]:
        data = json.loads(payload)
        self.calls.append((channel, data))
        if channel == "spec":
            answers: dict[str, Any] = {
                "operations": [{"id": "pets.list"}],
                "schemas": ["Pet"],
                "info": {"title": "Pets"},
                "schema": {"name": data.get("name"), "type": "object"},
            }
            return True, json.dumps(answers[data["what"]])
        if data["op"] in self.errors:
            return False, json.dumps(self.errors[data["op"]])
        return True, json.dumps({"echo": data})


@pytest.fixture(scope="session")
def sandbox() -> Iterator[WasmSandbox]:
    box = WasmSandbox(cache_dir=default_cache_dir())
    box.prepare()
    yield box


def run(box: Any, code: str, bridge: Any = noop_bridge, **kw: Any) -> RunOutcome:
    outcome: RunOutcome = box.run(code, bridge, **kw)
    return outcome


# -- basics ----------------------------------------------------------------


def test_print_and_result_round_trip(sandbox: WasmSandbox) -> None:
    out = run(sandbox, "print('hello', 1)\nresult = {'a': [1, 2.5, None, True], 'b': 'é'}")
    assert out.ok and out.error is None and out.limit is None
    assert out.stdout == "hello 1\n"
    assert out.result == {"a": [1, 2.5, None, True], "b": "é"}
    assert out.duration_ms > 0


def test_no_result_is_none(sandbox: WasmSandbox) -> None:
    out = run(sandbox, "x = 1")
    assert out.ok and out.result is None


def test_non_json_result_is_converted_with_note(sandbox: WasmSandbox) -> None:
    out = run(sandbox, "import datetime\nresult = {'t': (1, 2), 's': {3}, 'd': datetime.date(2020, 1, 2)}")
    assert out.ok
    assert out.result == {"t": [1, 2], "s": [3], "d": "2020-01-02"}
    assert out.notes == ("result: date values are not JSON and were converted with str()",)


def test_exception_reports_line_and_traceback(sandbox: WasmSandbox) -> None:
    code = "x = 1\n\ndef f(n):\n    return n / 0\n\nprint('before')\nf(x)\n"
    out = run(sandbox, code)
    assert not out.ok and out.error is not None
    assert out.error.type == "ZeroDivisionError"
    assert out.error.message == "division by zero"
    assert out.error.line == 4
    assert 'File "<code>", line 7, in <module>' in out.error.traceback
    assert "return n / 0" in out.error.traceback
    assert "codemode_guest" not in out.error.traceback
    assert out.stdout == "before\n"
    assert out.limit is None


def test_syntax_error_reports_line(sandbox: WasmSandbox) -> None:
    out = run(sandbox, "x = 1\ny = (\n")
    assert out.error is not None and out.error.type == "SyntaxError"
    assert out.error.line == 2


def test_allowed_modules_are_importable(sandbox: WasmSandbox) -> None:
    code = "\n".join(f"import {m}" for m in sorted(GUEST_MODULES)) + "\nfrom urllib import parse\nresult = 1"
    out = run(sandbox, code)
    assert out.ok, out.error


def test_disallowed_import_names_allow_list(sandbox: WasmSandbox) -> None:
    out = run(sandbox, "import os")
    assert out.error is not None and out.error.type == "ImportError"
    assert "import of 'os' is not allowed" in out.error.message and "json" in out.error.message


# -- the bridge ------------------------------------------------------------


def test_api_calls_send_the_protocol(sandbox: WasmSandbox) -> None:
    bridge = RecordingBridge()
    code = "a = api.pets.list(1, 'x', limit=5)\nb = api.call('GET /pets/{id}', id=3)\nresult = [a, b]"
    out = run(sandbox, code, bridge)
    assert out.ok, out.error
    assert bridge.calls == [
        ("invoke", {"op": "pets.list", "args": [1, "x"], "kwargs": {"limit": 5}}),
        ("invoke", {"op": "GET /pets/{id}", "args": [], "kwargs": {"id": 3}, "by": "target"}),
    ]
    assert out.result[0] == {"echo": bridge.calls[0][1]}


def test_non_json_argument_is_a_type_error(sandbox: WasmSandbox) -> None:
    bridge = RecordingBridge()
    out = run(sandbox, "api.pets.create(body={1, 2})", bridge)
    assert out.error is not None and out.error.type == "TypeError"
    assert "argument 'body' of pets.create is not JSON-serialisable (set)" in out.error.message
    assert bridge.calls == []


ERROR_KINDS = [
    ("api_error", "ApiError"),
    ("usage", "TypeError"),
    ("unknown_operation", "AttributeError"),
    ("not_allowed", "PermissionError"),
    ("limit", "CallLimitExceeded"),
    ("something_new", "RuntimeError"),
]


@pytest.mark.parametrize(("kind", "exc_name"), ERROR_KINDS)
def test_error_kinds_map_to_exceptions(sandbox: WasmSandbox, kind: str, exc_name: str) -> None:
    err = {"kind": kind, "message": f"{kind} happened", "status": 404, "body": {"x": 1}, "operation": "pets.get"}
    bridge = RecordingBridge({"pets.get": err})
    code = f"""
try:
    api.pets.get(1)
except {exc_name} as e:
    result = {{"type": type(e).__name__, "msg": str(e), "runtime": isinstance(e, RuntimeError)}}
    if isinstance(e, ApiError):
        result.update(status=e.status, body=e.body, operation=e.operation)
"""
    out = run(sandbox, code, bridge)
    assert out.ok, out.error
    assert out.result["type"] == exc_name and out.result["msg"] == f"{kind} happened"
    if kind == "api_error":
        assert out.result | {"status": 404, "body": {"x": 1}, "operation": "pets.get"} == out.result
    if kind == "limit":
        assert out.result["runtime"] is True


def test_uncaught_api_error_reports_line(sandbox: WasmSandbox) -> None:
    err = {"kind": "api_error", "message": "404 Not Found", "status": 404, "body": None, "operation": "pets.get"}
    out = run(sandbox, "x = 1\napi.pets.get(7)", RecordingBridge({"pets.get": err}))
    assert out.error is not None and out.error.type == "ApiError" and out.error.line == 2
    assert out.error.message == "404 Not Found"


def test_spec_view(sandbox: WasmSandbox) -> None:
    bridge = RecordingBridge()
    code = "result = [spec.operations, spec.operations, spec.schemas, spec.info, spec.schema('Pet')]"
    out = run(sandbox, code, bridge, inject=("spec",))
    assert out.ok, out.error
    assert out.result == [[{"id": "pets.list"}]] * 2 + [["Pet"], {"title": "Pets"}, {"name": "Pet", "type": "object"}]
    assert [c for c in bridge.calls].count(("spec", {"what": "operations"})) == 1  # cached


def test_inject_controls_names(sandbox: WasmSandbox) -> None:
    out = run(sandbox, "result = ['api' in dir(), 'spec' in dir()]", inject=("spec",))
    assert out.result == [False, True]
    out = run(sandbox, "result = ['api' in dir(), 'spec' in dir()]", inject=("api", "spec"))
    assert out.result == [True, True]


def test_raising_bridge_becomes_an_error_not_a_crash(sandbox: WasmSandbox) -> None:
    def bad(channel: str, payload: str) -> tuple[bool, str]:
        raise RuntimeError("boom")

    out = run(sandbox, "try:\n    api.x.y()\nexcept RuntimeError as e:\n    result = str(e)", bad)
    assert out.ok and "host bridge failed on channel 'invoke': RuntimeError" in out.result
    assert run(sandbox, "result = 2").result == 2


# -- limits ----------------------------------------------------------------


def test_timeout(sandbox: WasmSandbox) -> None:
    out = run(sandbox, "while True:\n    pass", limits=SandboxLimits(timeout_seconds=1.0))
    assert not out.ok and out.limit == "timeout_seconds"
    assert out.error is not None and out.error.type == "TimeoutError"
    assert out.error.message == "execution exceeded timeout_seconds=1.0"
    assert 900 < out.duration_ms < 3000
    assert run(sandbox, "result = 1").result == 1


def test_memory(sandbox: WasmSandbox) -> None:
    out = run(sandbox, "x = 'a' * 10**9")
    assert not out.ok and out.limit == "memory_mb"
    assert out.error is not None and out.error.type == "MemoryError" and out.error.line == 1
    assert "memory_mb=256" in out.error.message
    assert run(sandbox, "result = 'ok'").result == "ok"


def test_output_flood_is_truncated(sandbox: WasmSandbox) -> None:
    limits = SandboxLimits(max_output_bytes=1000)
    out = run(sandbox, "for i in range(100000):\n    print('x' * 50)\nresult = 'done'", limits=limits)
    assert out.ok and out.result == "done" and out.stdout_truncated
    body, _, note = out.stdout.rpartition("\n[")
    assert len(body.encode()) <= 1000
    assert note == "output truncated: print() output exceeded max_output_bytes=1000]"


def test_result_too_big(sandbox: WasmSandbox) -> None:
    out = run(sandbox, "result = 'x' * 2000", limits=SandboxLimits(max_result_bytes=1000))
    assert not out.ok and out.limit == "max_result_bytes" and out.result is None
    assert out.error is not None and "over max_result_bytes=1000" in out.error.message


def test_code_too_big_is_rejected_before_running(sandbox: WasmSandbox) -> None:
    bridge = RecordingBridge()
    code = "api.a.b()\n" + "#" * 200
    out = run(sandbox, code, bridge, limits=SandboxLimits(max_code_bytes=100))
    assert not out.ok and out.limit == "max_code_bytes" and bridge.calls == []
    assert out.error is not None and "over max_code_bytes=100" in out.error.message


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        SandboxLimits(timeout_seconds=0)
    with pytest.raises(ValueError):
        SandboxLimits(memory_mbs=3)  # type: ignore[call-arg]


# -- isolation ---------------------------------------------------------------


def test_fresh_namespace_per_run(sandbox: WasmSandbox) -> None:
    first = "import json\njson.SECRET = 1\nGLOBAL = 2\n__builtins__['len'] = None\nresult = 'set'"
    assert run(sandbox, first).result == "set"
    second = "import json\nresult = [hasattr(json, 'SECRET'), 'GLOBAL' in dir(), len('abc')]"
    assert run(sandbox, second).result == [False, False, 3]


def test_concurrent_runs(sandbox: WasmSandbox) -> None:
    results: dict[int, RunOutcome] = {}

    def worker(i: int) -> None:
        bridge = RecordingBridge()
        code = f"total = 0\nfor k in range(20000):\n    total += k\nv = api.g.op({i})\nresult = [{i}, total, v]"
        results[i] = run(sandbox, code, bridge)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert results[i].ok, results[i].error
        assert results[i].result[:2] == [i, sum(range(20000))]
        assert results[i].result[2]["echo"]["args"] == [i]


def test_timeout_in_one_thread_does_not_stop_others(sandbox: WasmSandbox) -> None:
    """Runs in flight in another thread at the moment one run's timeout fires finish normally."""
    slow_end: list[float] = []
    slow_out: list[RunOutcome] = []

    def slow() -> None:
        slow_out.append(run(sandbox, "while True: pass", limits=SandboxLimits(timeout_seconds=0.5)))
        slow_end.append(time.monotonic())

    spans: list[tuple[float, float, RunOutcome, int]] = []

    def fast() -> None:
        i = 0
        while not slow_end or i < 3:
            started = time.monotonic()
            out = run(sandbox, f"import time\ntime.sleep(0.05)\nresult = {i}", limits=SandboxLimits(timeout_seconds=5))
            spans.append((started, time.monotonic(), out, i))
            i += 1

    threads = [threading.Thread(target=fast), threading.Thread(target=slow)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert slow_out and slow_out[0].limit == "timeout_seconds", slow_out
    assert all(out.ok and out.result == i for _, _, out, i in spans), [o.error for _, _, o, _ in spans]
    # the timeout fired while a fast run was in flight, and that run still finished normally
    assert any(start < slow_end[0] < end for start, end, _, _ in spans), "no fast run overlapped the timeout"


def test_close_ends_waits_and_stops_the_ticker() -> None:
    box = WasmSandbox()
    box.prepare()
    assert box._isolate is not None
    ticker = box._isolate.ticker.thread
    outs: list[RunOutcome] = []
    sleeper = threading.Thread(
        target=lambda: outs.append(run(box, "import time\ntime.sleep(30)", limits=SandboxLimits(timeout_seconds=60)))
    )
    sleeper.start()
    time.sleep(0.3)  # the guest is inside its host-side wait
    started = time.monotonic()
    box.close(timeout=5)
    sleeper.join(5)
    assert not sleeper.is_alive() and time.monotonic() - started < 5
    assert outs and outs[0].limit == "timeout_seconds", outs
    assert not ticker.is_alive()
    # a closed sandbox prepares itself again when used
    assert run(box, "result = 2").result == 2
    box.close(timeout=5)


def test_every_prepare_close_cycle_leaves_no_thread() -> None:
    before = {t.ident for t in threading.enumerate()}
    for _ in range(3):
        with WasmSandbox() as box:
            assert run(box, "result = 1").result == 1
    time.sleep(0.1)
    left = [t.name for t in threading.enumerate() if t.ident not in before]
    assert left == [], left


# -- LocalSandbox ------------------------------------------------------------

SAME_SHAPE_PROGRAMS = [
    "print('a')\nresult = {'x': (1, 2)}",
    "x = 1\n1 / 0",
    "result = api.pets.list(3)",
    "try:\n    api.pets.get(1)\nexcept ApiError as e:\n    result = [e.status, str(e)]",
    "import os",
    "result = {1, 2}",
    "def f(:\n",
]


@pytest.mark.parametrize("code", SAME_SHAPE_PROGRAMS)
def test_local_sandbox_matches_wasm(sandbox: WasmSandbox, code: str) -> None:
    err = {"kind": "api_error", "message": "gone", "status": 410, "body": None, "operation": "pets.get"}
    wasm = run(sandbox, code, RecordingBridge({"pets.get": err}))
    local = run(LocalSandbox(), code, RecordingBridge({"pets.get": err}))
    assert (wasm.ok, wasm.stdout, wasm.stdout_truncated, wasm.result, wasm.limit, wasm.notes) == (
        local.ok,
        local.stdout,
        local.stdout_truncated,
        local.result,
        local.limit,
        local.notes,
    )
    if wasm.error is None:
        assert local.error is None
    else:
        assert local.error is not None
        assert (wasm.error.type, wasm.error.line) == (local.error.type, local.error.line)
        if wasm.error.type != "SyntaxError":  # CPython 3.14 (guest) and the host word these differently
            assert wasm.error.message == local.error.message


# -- the build cache ---------------------------------------------------------


def _copy_cache(sandbox: WasmSandbox, dest: Path) -> Path:
    src = Path(sandbox.cache_dir or default_cache_dir())
    dest.mkdir()
    cwasm = _build._cwasm_path(src)
    for path in (_build.ensure_wasm(src), cwasm, cwasm.with_suffix(".sha256")):
        shutil.copy2(path, dest / path.name)
    return dest


def _forbid_rebuild(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    compiled: list[str] = []

    def no_componentize(out: Path) -> None:
        raise AssertionError("componentize-py must not run again")

    real_compile = _build._compile

    def counting_compile(engine: Any, wasm: Path, cwasm: Path, progress: Any = None) -> None:
        compiled.append(cwasm.name)
        real_compile(engine, wasm, cwasm, progress)

    monkeypatch.setattr(_build, "_componentize", no_componentize)
    monkeypatch.setattr(_build, "_compile", counting_compile)
    return compiled


def test_cache_is_reused(sandbox: WasmSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = _copy_cache(sandbox, tmp_path / "cache")
    compiled = _forbid_rebuild(monkeypatch)
    steps: list[tuple[str, str]] = []
    box = WasmSandbox(cache_dir=cache, progress=_Steps(steps))
    box.prepare()
    assert compiled == [] and steps == []  # a cached isolate reports nothing
    assert run(box, "result = 5").result == 5


@pytest.mark.parametrize("how", ["garbage", "garbage_with_matching_checksum", "missing_checksum"])
def test_corrupt_cache_is_recovered(
    sandbox: WasmSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    cache = _copy_cache(sandbox, tmp_path / "cache")
    cwasm = _build.ensure_component(cache)
    cwasm.write_bytes(b"\x7fELF not really machine code" * 1000)
    if how == "garbage_with_matching_checksum":
        cwasm.with_suffix(".sha256").write_text(_build._file_sha256(cwasm))
    elif how == "missing_checksum":
        cwasm.with_suffix(".sha256").unlink()
    compiled = _forbid_rebuild(monkeypatch)
    steps: list[tuple[str, str]] = []
    box = WasmSandbox(cache_dir=cache, progress=_Steps(steps))
    box.prepare()
    assert compiled == [cwasm.name]
    assert steps[0] == (_build.COMPILE_STEP, "start") and steps[-1] == (_build.COMPILE_STEP, "done")
    assert run(box, "result = 6").result == 6


class _Steps:
    """Records (step, kind) of the isolate's progress events."""

    def __init__(self, into: list[tuple[str, str]]) -> None:
        self.into = into

    def emit(self, event: Any) -> None:
        self.into.append((event.step, event.kind))
