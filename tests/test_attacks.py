"""Hostile programs against the real isolate.

Each attack states HOW it is contained, and after each one the same sandbox
must still run a trivial program. Where the policy check applies, the attack
is checked both ways: ``check_code`` rejects it, AND run directly in the
isolate (bypassing the policy) it is still contained.

``BYPASS`` reaches the guest's real ``builtins`` module through ``print``'s
globals: it models code that has fully escaped the guest-level Python guards,
leaving the WebAssembly/WASI boundary as the only wall.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client

from codemode import load_spec
from codemode._admission import ExecutionLimiter, ExecutionLimits
from codemode._credentials import Credentials, guest_override, seed_scrubber
from codemode._errors import ConfigError, ServerBusy, UpstreamError, UsageError
from codemode._hostcheck import ExactHostCheck
from codemode._ir import SecurityScheme
from codemode._sandbox import (
    GUEST_MODULES,
    LocalSandbox,
    RunOutcome,
    SandboxLimits,
    WasmSandbox,
    check_code,
    default_cache_dir,
)
from codemode._scrub import Scrubber
from codemode._server import CodemodeServer
from codemode._settings import ExecuteSettings, ServerSettings
from codemode._upstream import HttpxUpstream
from codemode._upstream_types import UpstreamRequest, UpstreamResponse, UpstreamSettings
from codemode._validation import ValidationTimeout, validator_class
from codemode._validation import deadline as validation_deadline

BYPASS = "B = print.__func__.__globals__['builtins']\nI = B.__import__\n"
FAST = SandboxLimits(timeout_seconds=1.0, memory_mb=64)
SECRET = "codemode-test-secret-value"


class Bridge:
    def __init__(self, limit_after: int | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.limit_after = limit_after

    def __call__(self, channel: str, payload: str) -> tuple[bool, str]:
        self.calls.append((channel, len(payload)))
        if self.limit_after is not None and len(self.calls) > self.limit_after:
            err = {"kind": "limit", "message": f"more than {self.limit_after} calls", "status": None}
            return False, json.dumps(err)
        return True, "null"


@dataclass
class Attack:
    id: str
    code: str
    check: Callable[[RunOutcome, Bridge], None]
    policy_rejects: str | None = None  # a fragment of the policy's message, if the policy must reject it
    limits: SandboxLimits = field(default_factory=lambda: FAST)
    bridge: Callable[[], Bridge] = Bridge


def error_is(*types: str, contains: str = "", limit: str | None = None) -> Callable[[RunOutcome, Bridge], None]:
    def check(out: RunOutcome, bridge: Bridge) -> None:
        assert not out.ok and out.error is not None, out
        assert out.error.type in types, out.error
        assert contains in out.error.message, out.error
        assert out.limit == limit, out
        assert out.result is None

    return check


def result_is(expected: Any) -> Callable[[RunOutcome, Bridge], None]:
    def check(out: RunOutcome, bridge: Bridge) -> None:
        assert out.ok, out.error
        assert out.result == expected

    return check


def timed_out(out: RunOutcome, bridge: Bridge) -> None:
    error_is("TimeoutError", contains="timeout_seconds=1.0", limit="timeout_seconds")(out, bridge)
    assert out.duration_ms < 2500, out.duration_ms


def ends_by_deadline(out: RunOutcome, bridge: Bridge) -> None:
    """Whatever the outcome (an error, a result), the run ended by its 1 s timeout."""
    assert out.duration_ms < 2500, out.duration_ms


def out_of_memory(out: RunOutcome, bridge: Bridge) -> None:
    error_is("MemoryError", contains="memory_mb=64", limit="memory_mb")(out, bridge)


def output_capped(out: RunOutcome, bridge: Bridge) -> None:
    assert out.stdout_truncated and len(out.stdout) < 64_200
    assert "max_output_bytes=64000" in out.stdout


def no_host_frames(out: RunOutcome, bridge: Bridge) -> None:
    assert out.ok, out.error
    # the frame walk ends inside the guest: the host's Python is not reachable
    assert out.result == ["<code>", "/0/codemode_guest.py", "/0/app.py"]


def nothing_dangerous_in_subclasses(out: RunOutcome, bridge: Bridge) -> None:
    assert out.ok, out.error
    # os.popen exists but needs subprocess, which is not in the isolate; no file system either
    assert out.result == {"system": False, "popen": "ModuleNotFoundError", "passwd": "FileNotFoundError"}


def channel_refused(out: RunOutcome, bridge: Bridge) -> None:
    error_is("Err", contains="unknown channel 'secrets'")(out, bridge)
    assert bridge.calls == []  # refused by the host before reaching the bridge


def direct_channel_refused(out: RunOutcome, bridge: Bridge) -> None:
    assert out.ok and out.result[0] is False and "unknown channel 'secrets'" in out.result[1], out
    assert bridge.calls == []


def big_argument_delivered(out: RunOutcome, bridge: Bridge) -> None:
    assert out.ok, out.error
    assert bridge.calls == [("invoke", 5_000_000 + len('{"op": "x.y", "args": [""], "kwargs": {}}'))]


def flood_limited(out: RunOutcome, bridge: Bridge) -> None:
    assert out.ok, out.error
    assert out.result == {"ok": 100, "limited": 9900}
    assert len(bridge.calls) == 10_000


def flood_uncaught(out: RunOutcome, bridge: Bridge) -> None:
    error_is("CallLimitExceeded", contains="more than 100 calls")(out, bridge)
    assert out.error is not None and out.error.line == 2
    assert len(bridge.calls) == 101


ATTACKS = [
    # -- the file system -----------------------------------------------------
    Attack("read_passwd", "result = open('/etc/passwd').read()", error_is("NameError"), "use of 'open'"),
    Attack("read_passwd_bypass", BYPASS + "result = B.open('/etc/passwd').read()", error_is("FileNotFoundError")),
    Attack("read_passwd_io", "import io\nresult = io.open('/etc/passwd').read()", error_is("FileNotFoundError")),
    Attack(
        "read_proc_environ", "import io\nresult = io.FileIO('/proc/self/environ').read()", error_is("FileNotFoundError")
    ),
    Attack("listdir_root", BYPASS + "result = I('os').listdir('/')", error_is("FileNotFoundError")),
    Attack("listdir_policy", "import os\nresult = os.listdir('/')", error_is("ImportError"), "import of 'os'"),
    Attack("write_file", BYPASS + "B.open('/tmp/codemode-pwned', 'w').write('x')", error_is("FileNotFoundError")),
    # -- environment, network, processes ---------------------------------------
    Attack("environ", BYPASS + "result = dict(I('os').environ)", result_is({})),
    Attack("socket", "import socket", error_is("ImportError", contains="'socket'"), "import of 'socket'"),
    Attack("socket_bypass", BYPASS + "I('socket')", error_is("ModuleNotFoundError")),
    Attack("raw_socket", BYPASS + "s = I('_socket').socket()", error_is("PermissionError")),
    Attack(
        "urllib_request",
        "import urllib.request\nurllib.request.urlopen('http://example.com')",
        error_is("ImportError"),
        "import of 'urllib.request'",
    ),
    Attack("urllib_request_bypass", BYPASS + "I('urllib.request')", error_is("ModuleNotFoundError")),
    Attack("subprocess", BYPASS + "I('subprocess').run(['id'])", error_is("ModuleNotFoundError")),
    Attack("ctypes", BYPASS + "I('ctypes').CDLL(None)", error_is("ModuleNotFoundError")),
    Attack("os_system", BYPASS + "I('os').system('id')", error_is("AttributeError", contains="'system'")),
    Attack("os_fork", BYPASS + "I('os').fork()", error_is("AttributeError", contains="'fork'")),
    Attack("threading", "import threading", error_is("ImportError"), "import of 'threading'"),
    Attack("threading_bypass", BYPASS + "I('threading')", error_is("ModuleNotFoundError")),
    Attack(
        "raw_thread",
        BYPASS + "I('_thread').start_new_thread(print, ())",
        error_is("RuntimeError", contains="can't start new thread"),
    ),
    # -- CPU, time, memory, stack, output --------------------------------------
    Attack("while_true", "while True:\n    pass", timed_out),
    Attack("cpu_burn", "result = sum(i * i for i in range(10**12))", timed_out),
    Attack("sleep_past_timeout", "import time\ntime.sleep(30)", timed_out),
    # Review finding 2: the original blocking sleep was reachable through the sliced sleep's closure.
    # Every WASI wait is now the host's own and ends at the deadline, whichever way the guest gets there.
    Attack(
        "sleep_closure",
        "import dataclasses, time\ndataclasses.inspect.getclosurevars(time.sleep).nonlocals['blocking'](20)",
        ends_by_deadline,
    ),
    Attack("sleep_reloaded", BYPASS + "I('importlib').reload(I('time')).sleep(20)", timed_out),
    Attack("sleep_in_a_loop", "import time\nwhile True:\n    time.sleep(0.001)", timed_out),
    Attack("select_wait", BYPASS + "I('select').select([], [], [], 20)", timed_out),
    Attack("poll_wait", BYPASS + "p = I('select').poll()\np.poll(20000)", ends_by_deadline),
    Attack(
        "lock_wait",
        BYPASS + "L = I('_thread').allocate_lock()\nL.acquire()\nresult = L.acquire(timeout=20)",
        ends_by_deadline,
    ),
    Attack("stdin_read", BYPASS + "result = I('sys').stdin.read()", result_is("")),
    Attack(
        "stderr_flood",
        BYPASS + "E = I('sys').stderr\nfor i in range(2000):\n    E.write('x' * 5000)\nE.flush()\nresult = 1",
        ends_by_deadline,
    ),
    Attack("memory_list", "x = []\nwhile True:\n    x.append([0] * 100000)", out_of_memory),
    Attack("memory_bytearray", "x = bytearray(10**9)", out_of_memory),
    Attack("memory_string", "x = 'a' * 10**9", out_of_memory),
    Attack("deep_recursion", "def f(n):\n    return f(n + 1)\nf(0)", error_is("RecursionError")),
    Attack(
        "stack_exhaustion",
        BYPASS + "I('sys').setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1) + 1\nf(0)",
        error_is("RecursionError", contains="stack"),
    ),
    Attack(
        "output_flood",
        "for i in range(200_000):\n    print('x' * 1000)\nresult = i",
        lambda o, b: (result_is(199_999)(o, b), output_capped(o, b)),
        limits=SandboxLimits(memory_mb=64),
    ),
    Attack("huge_print", "print('x' * 10**7)\nresult = 1", lambda o, b: (result_is(1)(o, b), output_capped(o, b))),
    Attack(
        "huge_error_message",
        "raise ValueError('x' * 10**7)",
        lambda o, b: (error_is("ValueError")(o, b), _short_message(o)),
    ),
    Attack("huge_result", "result = 'x' * 10**7", error_is("ResultTooLarge", limit="max_result_bytes")),
    # -- exiting ------------------------------------------------------------------
    Attack("os_exit", BYPASS + "I('os')._exit(7)", error_is("SystemExit", contains="exited the isolate")),
    Attack("sys_exit", BYPASS + "I('sys').exit(3)", error_is("SystemExit", contains="3")),
    Attack("raise_system_exit", "raise SystemExit(0)", error_is("SystemExit")),
    Attack("raise_keyboard_interrupt", "raise KeyboardInterrupt", error_is("KeyboardInterrupt")),
    Attack("raise_base_exception", "raise BaseException('x')", error_is("BaseException")),
    Attack("exit_builtin", "exit(0)", error_is("NameError")),
    Attack(
        "evil_str",
        "class E(Exception):\n    def __str__(self):\n        raise SystemExit\nraise E()",
        error_is("E", contains="str() failed"),
    ),
    Attack(
        "evil_result",
        "class R:\n    def __str__(self):\n        raise KeyboardInterrupt\nresult = R()",
        error_is("KeyboardInterrupt", contains="could not be converted"),
    ),
    # -- import tricks and introspection --------------------------------------
    Attack("importlib", "import importlib\nimportlib.import_module('os')", error_is("ImportError"), "'importlib'"),
    Attack("dunder_import", "__import__('os')", error_is("ImportError"), "use of '__import__'"),
    Attack("exec_string", "exec('import os')", error_is("ImportError"), "use of 'exec'"),
    Attack(
        "builtins_swap",
        "__builtins__['__import__'] = lambda *a, **k: None\nimport os\nresult = 1",
        result_is(1),
        "name '__builtins__'",
    ),
    Attack(
        "sys_modules_tamper", BYPASS + "S = I('sys')\nS.modules.clear()\nS.modules['os'] = 1\nresult = 1", result_is(1)
    ),
    Attack(
        "subclass_walk",
        "found = {'system': False, 'popen': None, 'passwd': None}\n"
        "for c in ().__class__.__bases__[0].__subclasses__():\n"
        "    g = getattr(getattr(c, '__init__', None), '__globals__', None) or {}\n"
        "    found['system'] = found['system'] or 'system' in g\n"
        "    if 'popen' in g and found['popen'] is None:\n"
        "        try:\n"
        "            g['popen']('id')\n"
        "        except Exception as e:\n"
        "            found['popen'] = type(e).__name__\n"
        "    if 'open' in g and found['passwd'] is None:\n"
        "        try:\n"
        "            g['open']('/etc/passwd')\n"
        "        except Exception as e:\n"
        "            found['passwd'] = type(e).__name__\n"
        "result = found",
        nothing_dangerous_in_subclasses,
        "access to '__class__'",
    ),
    Attack(
        "frame_walk",
        "try:\n    1 / 0\nexcept Exception as e:\n    f = e.__traceback__.tb_frame\n    out = []\n"
        "    while f is not None:\n        out.append(f.f_code.co_filename)\n        f = f.f_back\n"
        "    result = out",
        no_host_frames,
        "access to '__traceback__'",
    ),
    Attack(
        "format_escape",
        "result = '{0.__class__.__mro__}'.format(1)",
        result_is("(<class 'int'>, <class 'object'>)"),
        "format fields reaching dunder attributes",
    ),
    Attack("runtime_sabotage", BYPASS + "I('json').dumps = None", error_is("IsolateError")),
    # Review finding 7: ways past the pre-check without writing a dunder. The policy does not see
    # them (it is an early, friendly error, not a wall); the guest's module views and the host's
    # limits do.
    Attack("typing_sys", "import typing\nresult = str(typing.sys.modules['os'])", error_is("AttributeError")),
    Attack("dataclasses_inspect", "import dataclasses\nresult = str(dataclasses.inspect)", error_is("AttributeError")),
    Attack("random_os", "import random\nresult = random._os.getcwd()", error_is("AttributeError")),
    Attack(
        "attrgetter_dunder",
        "import operator\nresult = str(operator.attrgetter('_' * 2 + 'class' + '_' * 2)(1))",
        error_is("AttributeError", contains="dunder"),
    ),
    Attack(
        "methodcaller_dunder",
        "import operator\nresult = operator.methodcaller('_' * 2 + 'reduce_ex' + '_' * 2, 2)(1)",
        error_is("AttributeError", contains="dunder"),
    ),
    # Strings typing evaluates (string annotations, TypedDict fields, ForwardRef) are data to the policy
    # unless written as annotations; in the guest a forward reference must be a type expression.
    Attack(
        "typeddict_field_evaluated",
        "import typing\nT = typing.TypedDict('T', {'a': '().__class__.__base__'})\n"
        "result = str(typing.get_type_hints(T))",
        error_is("TypeError", contains="is not a type expression"),
    ),
    Attack(
        "annotation_from_a_variable",
        "import typing\ns = '_' * 2 + 'import' + '_' * 2 + \"('os').getcwd()\"\nclass A:\n    x: s\n"
        "result = str(typing.get_type_hints(A))",
        error_is("TypeError", contains="is not a type expression"),
    ),
    Attack(
        "forward_ref_eval",
        "import typing\nr = typing.ForwardRef('ev' + 'al(\"[].__class__\")')\nresult = str(r.evaluate())",
        error_is("TypeError", contains="is not a type expression"),
    ),
    Attack(
        "forward_refs_that_are_types",
        "import typing\nT = typing.TypedDict('T', {'a': 'int', 'b': 'list[str] | None', 'c': 'dict[str, int]'})\n"
        "class A:\n    x: 'int'\n    y: 'tuple[int, ...]'\n"
        "result = [sorted(typing.get_type_hints(T)), sorted(typing.get_type_hints(A))]",
        result_is([["a", "b", "c"], ["x", "y"]]),
    ),
    # str.format still reads attributes by name: a string comes out, never an object
    Attack(
        "format_dunder_runtime", "result = ('{0.%sclass%s}' % ('_' * 2, '_' * 2)).format(1)", result_is("<class 'int'>")
    ),
    Attack("bridge_direct_channel", "result = api._call('secrets', '{}')", direct_channel_refused),
    # -- the bridge -------------------------------------------------------------
    Attack("bad_channel", BYPASS + "I('sys').modules['wit_world.imports.host'].call('secrets', '{}')", channel_refused),
    Attack("huge_argument", "api.x.y('a' * 5_000_000)", big_argument_delivered),
    Attack(
        "call_flood",
        "n = {'ok': 0, 'limited': 0}\nfor i in range(10_000):\n    try:\n        api.x.y(i)\n        n['ok'] += 1\n"
        "    except CallLimitExceeded:\n        n['limited'] += 1\nresult = n",
        flood_limited,
        limits=SandboxLimits(memory_mb=64),
        bridge=lambda: Bridge(limit_after=100),
    ),
    Attack(
        "call_flood_uncaught",
        "for i in range(10_000):\n    api.x.y(i)",
        flood_uncaught,
        limits=SandboxLimits(memory_mb=64),
        bridge=lambda: Bridge(limit_after=100),
    ),
]


def _short_message(out: RunOutcome) -> None:
    assert out.error is not None and len(out.error.message) < 5000 and "more characters" in out.error.message


# -- state leaking into the next run ----------------------------------------------
LEAKS = [
    ("module_attribute", "import json\njson.loads = None", "import json\nresult = json.loads('[1]')", [1]),
    (
        "real_builtins",
        BYPASS + "B.len = None\nB.SECRET = 1",
        "result = [len('ab'), 'SECRET' in dir(__builtins__)]",
        [2, False],
    ),
    ("globals", "LEFT_BEHIND = 1", "result = 'LEFT_BEHIND' in globals()", False),
    ("sys_modules", BYPASS + "I('sys').modules['json'] = None", "import json\nresult = json.dumps(1)", "1"),
]


@pytest.fixture(scope="session")
def sandbox() -> Iterator[WasmSandbox]:
    box = WasmSandbox(cache_dir=default_cache_dir())
    box.prepare()
    yield box


@pytest.fixture(autouse=True)
def host_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEMODE_TEST_SECRET", SECRET)


def test_enough_attacks() -> None:
    assert len(ATTACKS) + len(LEAKS) >= 30
    assert len({a.id for a in ATTACKS}) == len(ATTACKS)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_attack_is_contained(sandbox: WasmSandbox, attack: Attack) -> None:
    expected = attack.policy_rejects or ("access to '__func__'" if attack.code.startswith(BYPASS) else None)
    if expected is not None:  # the first wall...
        with pytest.raises(UsageError) as info:
            check_code(attack.code, allowed_modules=GUEST_MODULES)
        assert info.value.code == "code.rejected" and expected in info.value.message
    # ...and the second wall, with the policy bypassed:
    bridge = attack.bridge()
    out = sandbox.run(attack.code, bridge, limits=attack.limits)
    attack.check(out, bridge)
    assert SECRET not in out.stdout and SECRET not in json.dumps(out.result)
    after = sandbox.run("result = sum([1, 2])", Bridge())
    assert after.ok and after.result == 3, after


@pytest.mark.parametrize(("name", "first", "second", "expected"), LEAKS, ids=[leak[0] for leak in LEAKS])
def test_no_state_leaks_into_next_run(sandbox: WasmSandbox, name: str, first: str, second: str, expected: Any) -> None:
    sandbox.run(first, Bridge(), limits=FAST)
    out = sandbox.run(second, Bridge(), limits=FAST)
    assert out.ok, out.error
    assert out.result == expected


def test_bypass_code_is_rejected_by_policy() -> None:
    with pytest.raises(UsageError, match="access to '__func__' is not allowed") as info:
        check_code(BYPASS, allowed_modules=GUEST_MODULES)
    assert "access to '__globals__'" in info.value.message and "use of '__import__'" not in info.value.message


def test_no_file_written_on_host(sandbox: WasmSandbox, tmp_path: Path) -> None:
    """Self-contained: the write is attempted here, in every form, then the host is checked."""
    target = tmp_path / "codemode-pwned"
    for code in (
        BYPASS + f"B.open({str(target)!r}, 'w').write('x')",
        f"import io\nio.FileIO({str(target)!r}, 'w').write(b'x')",
        BYPASS + f"I('os').open({str(target)!r}, I('os').O_CREAT | I('os').O_WRONLY)",
    ):
        out = sandbox.run(code, Bridge(), limits=FAST)
        assert not out.ok and out.error is not None and out.error.type == "FileNotFoundError", out
    assert not target.exists() and not os.path.exists("/tmp/codemode-pwned")


# =====================================================================================
# Host-side attacks: the bridge, validation, credentials, admission, transport.
# (Review "Hardening the host side", findings 1-8, each fixed at its root.)
# =====================================================================================

ROOT = Path(__file__).resolve().parents[1]
SHARED_SPECS = ROOT.parent / "shared" / "specs"
PETSTORE = ROOT / "specs" / "petstore3-openapi.yaml"
HTTPBIN_SPEC = ROOT / "specs" / "httpbin-0.10.4-served-spec.json"
CLOUDFLARE_PATTERN = "^([a-z]+[a-z0-9_-]*[a-z0-9]+)$"


def shared_spec(name: str) -> Path:
    path = SHARED_SPECS / name
    if not path.exists():
        pytest.skip(f"{path} not found: the corpus lives in ../shared/specs beside the repository")
    return path


class Recorder:
    """An upstream that records every request and answers with a fixed body (any Upstream, no scrubbing)."""

    def __init__(self, body: Any = None, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.requests: list[UpstreamRequest] = []
        self.body, self.status, self.headers = body, status, headers or {}

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        self.requests.append(request)
        body = self.body(request) if callable(self.body) else self.body
        return UpstreamResponse(status=self.status, headers=self.headers, body=body, elapsed_ms=1.0, attempts=1)

    async def aclose(self) -> None:
        return None


async def tool(server: CodemodeServer, name: str, args: dict[str, Any]) -> tuple[str, bool]:
    async with Client(server.mcp) as client:
        result = await client.call_tool(name, args)
    return result.content[0].text, bool(result.is_error)  # type: ignore[union-attr]


def executed(text: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(text)
    return out


# -- finding 1: a slow pattern in host-side validation --------------------------------


async def test_catastrophic_pattern_answers_within_timeout_while_search_stays_fast(sandbox: WasmSandbox) -> None:
    """Cloudflare's pattern is cubic on ``"a" * n + "!"`` with backtracking; 100 kB took days on ``re``."""
    spec = load_spec(str(shared_spec("cloudflare-openapi.json")))
    limits = SandboxLimits(timeout_seconds=5)
    server = CodemodeServer(spec, ServerSettings(execute=ExecuteSettings(limits=limits)), sandbox=sandbox, env={})
    op = "GET /accounts/{account_id}/vectorize/indexes/{index_name}"
    code = f"api.call({op!r}, 'acc', 'a' * 100_000 + '!')"
    timings: dict[str, float] = {}
    async with Client(server.mcp) as client:  # build the keyword index first: the timing is of the wait, not the build
        await client.call_tool("search", {"query": "list dns records"})

    async def execute() -> tuple[str, bool]:
        started = time.monotonic()
        async with Client(server.mcp) as client:
            result = await client.call_tool("execute", {"code": code, "dry_run": True})
        timings["execute"] = time.monotonic() - started
        return result.content[0].text, bool(result.is_error)  # type: ignore[union-attr]

    async def search() -> None:
        await asyncio.sleep(0.05)  # while the execute is validating
        started = time.monotonic()
        async with Client(server.mcp) as client:
            await client.call_tool("search", {"query": "list dns records"})
        timings["search"] = time.monotonic() - started

    (text, is_error), _ = await asyncio.gather(execute(), search())
    assert timings["execute"] < limits.timeout_seconds + 2, timings
    assert timings["search"] < 1.0, timings
    assert is_error and "TypeError" in text and "does not match" in text, text


def test_patterns_run_in_linear_time_and_unsupported_ones_are_not_checked() -> None:
    cls = validator_class("oas30")
    value = "a" * 1_000_000 + "!"
    started = time.monotonic()
    errors = list(cls({"type": "string", "pattern": CLOUDFLARE_PATTERN}).iter_errors(value))
    assert len(errors) == 1 and time.monotonic() - started < 5  # hang bound: backtracking would take years
    assert not list(cls({"type": "string", "pattern": CLOUDFLARE_PATTERN}).iter_errors("my-index"))
    # a lone surrogate (valid in JSON, not in UTF-8) is a value like any other, never a host failure
    assert len(list(cls({"type": "string", "pattern": "^[a-z]+$"}).iter_errors("\ud800x"))) == 1
    assert not list(cls({"type": "string", "pattern": "x$"}).iter_errors("\ud800x"))
    # lookaround is not RE2: not checked on the host (the upstream judges), never an exception
    assert not list(cls({"type": "string", "pattern": "^(?=a)b$"}).iter_errors("zzz"))
    # patternProperties / additionalProperties (3.1) go through RE2 too
    schema = {"type": "object", "patternProperties": {CLOUDFLARE_PATTERN: {"type": "integer"}},
              "additionalProperties": False}  # fmt: skip
    assert len(list(validator_class("oas31")(schema).iter_errors({value: 1}))) == 1


def test_validation_stops_at_the_run_deadline() -> None:
    cls = validator_class("oas31")
    schema = {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "object"}]}}
    with validation_deadline(time.monotonic() - 1), pytest.raises(ValidationTimeout):
        list(cls(schema).iter_errors(["x"] * 10))
    assert not list(cls(schema).iter_errors(["x"] * 10))  # outside the block: no deadline


def test_unique_items_is_linear_and_keeps_json_equality() -> None:
    cls = validator_class("oas30")
    schema = {"type": "array", "uniqueItems": True}
    assert not list(cls(schema).iter_errors([{"a": i} for i in range(50_000)]))  # quadratic before
    assert list(cls(schema).iter_errors([{"a": 1}, {"a": 1.0}]))  # 1 == 1.0 in JSON Schema
    assert not list(cls(schema).iter_errors([True, 1]))  # true != 1


# -- finding 2 and 6: sleeping programs, execution slots, fair share ------------------

# The review's program (the original blocking sleep, reached through the old sliced sleep's closure),
# falling back to the plain sleep where that closure no longer exists.
SLEEPER = """import dataclasses, time
try:
    sleep = dataclasses.inspect.getclosurevars(time.sleep).nonlocals['blocking']
except (TypeError, AttributeError):
    sleep = time.sleep
sleep(90)"""


async def test_fifty_sleepers_end_by_their_timeout_and_another_session_is_served(sandbox: WasmSandbox) -> None:
    """50 concurrent sleeping programs under timeout 10 from five sessions; a sixth session is answered."""
    settings = ServerSettings(execute=ExecuteSettings(limits=SandboxLimits(timeout_seconds=10)))
    server = CodemodeServer(load_spec(str(PETSTORE)), settings, sandbox=sandbox, env={})
    ends: list[float] = []
    texts: list[str] = []
    executors: list[Any] = []

    async def session(n: int) -> None:
        async with Client(server.mcp) as client:

            async def one(code: str) -> None:
                result = await client.call_tool("execute", {"code": code})
                ends.append(time.monotonic())
                texts.append(result.content[0].text)  # type: ignore[union-attr]

            await asyncio.gather(*(one(SLEEPER) for _ in range(n)))

    async def bystander() -> tuple[float, str, bool]:
        await asyncio.sleep(1.5)  # every slot is taken by then
        started = time.monotonic()
        async with Client(server.mcp) as client:
            result = await client.call_tool("execute", {"code": "result = 6 * 7"})
            executors.append(server.executor())
        return time.monotonic() - started, result.content[0].text, bool(result.is_error)  # type: ignore[union-attr]

    started = time.monotonic()
    *_, (waited, text, is_error) = await asyncio.gather(*(session(10) for _ in range(5)), bystander())
    assert len(ends) == 50
    assert max(ends) - started < 10 + 3, max(ends) - started  # every run ended by its timeout
    assert all("timeout_seconds=10" in t or t.startswith("Server busy") for t in texts), texts
    assert waited < 2.0, waited
    assert (not is_error and json.loads(text)["result"] == 42) or text.startswith("Server busy"), text
    # no host thread (nor slot) held past the timeout
    assert server.limiter.running == 0 and server.limiter.queued == 0
    threads = executors[0]._threads
    assert threads is not None and threads[1].borrowed_tokens == 0


async def test_one_session_cannot_take_every_slot() -> None:
    """Fair share: with a session holding its whole share, another session still gets a slot at once."""
    limiter = ExecutionLimiter(ExecutionLimits(max_concurrent=4, queue_seconds=0.2))
    release = asyncio.Event()

    async def hold(client: str) -> str:
        try:
            async with limiter.slot(client, 64):
                await release.wait()
                return "ran"
        except ServerBusy as exc:
            return exc.code

    greedy = [asyncio.create_task(hold("session:greedy")) for _ in range(10)]
    await asyncio.sleep(0.3)
    assert limiter.held("session:greedy") == 2 and limiter.running == 2  # its share: half the slots
    async with limiter.slot("session:other", 64):
        assert limiter.held("session:other") == 1
    release.set()
    outcomes = await asyncio.gather(*greedy)
    assert outcomes.count("ran") == 2 and outcomes.count("server.busy") == 8


async def test_a_freed_slot_goes_to_the_client_holding_fewest() -> None:
    limiter = ExecutionLimiter(ExecutionLimits(max_concurrent=2, max_per_client=2, queue_seconds=5))
    order: list[str] = []
    gate = asyncio.Event()

    async def run(client: str, hold: bool) -> None:
        async with limiter.slot(client, 64):
            order.append(client)
            if hold:
                await gate.wait()

    first = [asyncio.create_task(run("a", True)) for _ in range(2)]
    await asyncio.sleep(0.05)
    waiting = [asyncio.create_task(run("a", False)), asyncio.create_task(run("b", False))]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(*first, *waiting)
    assert order[2] == "b", order  # "a" asked first, but "b" held no slot


async def test_memory_budget_and_queue_limits_refuse_with_a_clear_error() -> None:
    limiter = ExecutionLimiter(ExecutionLimits(max_concurrent=8, memory_budget_mb=512, queue_seconds=0.1, max_queued=0))
    async with limiter.slot("x", 256), limiter.slot("y", 256):
        with pytest.raises(ServerBusy, match="server busy"):
            async with limiter.slot("z", 256):
                pass
    with pytest.raises(ServerBusy, match="memory_budget_mb=512"):
        async with limiter.slot("z", 1024):
            pass
    assert limiter.running == 0


def test_one_limiter_serves_servers_on_different_event_loops() -> None:
    limiter = ExecutionLimiter(ExecutionLimits(max_concurrent=2, max_per_client=1, queue_seconds=2))
    results: list[float] = []

    async def use(client: str) -> None:
        async with limiter.slot(client, 64):
            await asyncio.sleep(0.2)
            results.append(time.monotonic())

    threads = [threading.Thread(target=lambda c=c: asyncio.run(use(c))) for c in ("a", "a", "b")]  # type: ignore[misc]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 3 and limiter.running == 0


def test_server_refuses_a_memory_limit_above_the_budget() -> None:
    settings = ServerSettings(
        execute=ExecuteSettings(limits=SandboxLimits(memory_mb=512)),
        executions=ExecutionLimits(memory_budget_mb=256),
    )
    with pytest.raises(ConfigError, match="memory_budget_mb=256"):
        CodemodeServer(load_spec(str(PETSTORE)), settings, sandbox=LocalSandbox(), env={})


# -- finding 3: secrets in every spelling, in every channel, in logs -------------------

KEY = "k3y/with+plus=eq-0123456789"  # a query key with the characters URLs encode


def httpbin_with_query_key(tmp: Path) -> Path:
    """httpbin's own spec plus an apiKey-in-query scheme, so that the key is really injected."""
    raw = json.loads(HTTPBIN_SPEC.read_text())
    raw["securityDefinitions"] = {"key": {"type": "apiKey", "in": "query", "name": "api_key"}}
    raw["security"] = [{"key": []}]
    path = tmp / "httpbin-with-key.json"
    path.write_text(json.dumps(raw))
    return path


async def test_partly_percent_encoded_query_key_never_reaches_the_guest(
    httpbin_url: str, sandbox: WasmSandbox, tmp_path: Path
) -> None:
    """Werkzeug echoes ``request.url`` with ``/`` decoded but ``+ =`` encoded: the review unquoted that."""
    settings = ServerSettings(upstream=UpstreamSettings(base_url=httpbin_url))
    server = CodemodeServer(
        load_spec(str(httpbin_with_query_key(tmp_path))), settings, sandbox=sandbox, env={"CODEMODE_KEY": KEY}
    )
    code = """
import urllib.parse
echo = api.call("GET /get")
url = echo["url"]
result = {"url": url, "unquoted": urllib.parse.unquote(url.split("api_key=")[1]), "args": echo["args"]}
"""
    text, is_error = await tool(server, "execute", {"code": code})
    assert not is_error, text
    out = executed(text)["result"]
    assert "api_key=" in out["url"], out  # the key was really sent ...
    assert KEY not in json.dumps(out) and KEY not in out["unquoted"], out  # ... and never seen
    assert out["args"]["api_key"] == "[REDACTED]"


@pytest.mark.parametrize(
    "spelling",
    [
        "k3y%2Fwith%2Bplus%3Deq-0123456789",  # fully encoded
        "k3y/with%2bplus%3deq-0123456789",  # partly, lower case
        "k3y%2fwith+plus=eq%2D0123456789",  # partly, other characters
        "%6B3y/with%2Bplus=eq-0123456789",  # an unreserved character encoded
        "k3y\\/with\\u002Bplus\\u003deq-0123456789",  # JSON escapes
        "k3y&#47;with&plus;plus&#x3D;eq-0123456789",  # HTML references
        "k3y&sol;with&#0043plus&equals;eq-0123456789",  # named, zero-padded, no semicolon
        "k3y/with plus=eq-0123456789",  # '+' decoded as a space
    ],
)
def test_scrubber_matches_every_spelling_per_character(spelling: str) -> None:
    scrubber = Scrubber([KEY])
    assert scrubber.scrub_text(f"before {spelling} after") == "before [REDACTED] after"


@pytest.mark.parametrize("charset", ["utf-16", "utf-16-be", "utf-32", "latin-1", "cp1252", "shift_jis"])
def test_scrubber_matches_secrets_in_any_charset_before_and_after_decoding(charset: str) -> None:
    secret = "pässwörd-0123456789" if charset in ("latin-1", "cp1252", "utf-16", "utf-16-be", "utf-32") else KEY
    scrubber = Scrubber([secret])
    body = f"<p>token: {secret}</p>".encode(charset)
    scrubbed = scrubber.scrub_bytes(body, charset)
    assert secret not in scrubbed.decode(charset, "replace") and "[REDACTED]" in scrubbed.decode(charset, "replace")
    # declared wrongly: the raw UTF-16 bytes still carry no secret for the guest to re-encode
    assert secret.encode("utf-16-le") not in Scrubber([secret]).scrub_bytes(secret.encode("utf-16-le"), "latin-1")


async def test_every_body_that_crosses_into_the_guest_is_scrubbed_whatever_the_upstream() -> None:
    """A non-scrubbing Upstream (any implementation of the seam): JSON, text, binary, error bodies."""
    secret = "sk-live-0123456789abcdef"
    spec = load_spec(str(PETSTORE))
    settings = ServerSettings(upstream=UpstreamSettings(headers={"Authorization": f"Bearer {secret}"}))
    bodies = {
        "json": {"token": secret, secret: [f"x{secret}y"]},
        "text": f"your key is {secret}",
        "binary": {"base64": base64.b64encode(b"\x00\x01" + secret.encode() + b"\xff").decode(),
                   "content_type": "application/octet-stream"},
    }  # fmt: skip
    for kind, body in bodies.items():
        for status in (200, 500):
            server = CodemodeServer(spec, settings, sandbox=LocalSandbox(), upstream=Recorder(body, status), env={})
            code = (
                "import base64\ntry:\n    r = api.pet.get_by_id(1)\nexcept ApiError as e:\n    r = e.body\n"
                "result = base64.b64decode(r['base64']).decode('latin-1') if isinstance(r, dict) and 'base64' in r "
                "else r"
            )
            text, _ = await tool(server, "execute", {"code": code})
            assert secret not in text and "REDACTED" in text, (kind, status, text)


async def test_upstream_error_messages_and_notes_are_scrubbed() -> None:
    secret = "sk-live-0123456789abcdef"
    spec = load_spec(str(PETSTORE))

    class Failing(Recorder):
        async def send(self, request: UpstreamRequest) -> UpstreamResponse:
            raise UpstreamError(f"could not reach https://x.test/?key={secret}", code="upstream.unreachable")

    settings = ServerSettings(upstream=UpstreamSettings(headers={"X-Api-Key": secret}))
    server = CodemodeServer(spec, settings, sandbox=LocalSandbox(), upstream=Failing(), env={})
    text, _ = await tool(server, "execute", {"code": "api.pet.get_by_id(1)"})
    assert secret not in text and "[REDACTED]" in text
    # a response that differs from the spec becomes a note quoting the value: scrubbed too
    wrong = {"id": secret, "name": "Rex", "photoUrls": []}  # id is an integer in the spec
    server = CodemodeServer(spec, settings, sandbox=LocalSandbox(), upstream=Recorder(wrong), env={})
    text, _ = await tool(server, "execute", {"code": "result = api.pet.get_by_id(1)"})
    out = executed(text)
    assert secret not in text and any("[REDACTED]" in n for n in out.get("notes", [])), out


async def test_a_secret_reassembled_in_the_guest_does_not_leave_in_its_output() -> None:
    secret = "sk-live-0123456789abcdef"
    spec = load_spec(str(PETSTORE))
    upstream = Recorder({"id": 1, "name": secret[::-1]})  # the upstream reversed it: unrecognisable there
    settings = ServerSettings(upstream=UpstreamSettings(headers={"X-Api-Key": secret}))
    server = CodemodeServer(spec, settings, sandbox=LocalSandbox(), upstream=upstream, env={})
    text, _ = await tool(server, "execute", {"code": "n = api.pet.get_by_id(1)['name'][::-1]\nprint(n)\nresult = n"})
    assert secret not in text


async def test_debug_logs_of_request_urls_carry_no_key(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """``--debug``: httpx logs every request URL, with the query key the host injected."""
    spec = load_spec(str(httpbin_with_query_key(tmp_path)))
    env = {"CODEMODE_KEY": KEY}
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"url": str(request.url)})

    up = UpstreamSettings(base_url="https://httpbin.test")
    credentials = Credentials.from_env(spec.security_schemes, env)
    upstream = HttpxUpstream(up, credentials=credentials, transport=httpx.MockTransport(handler))
    server = CodemodeServer(spec, ServerSettings(upstream=up), sandbox=LocalSandbox(), upstream=upstream, env=env)
    with caplog.at_level(logging.DEBUG):
        await tool(server, "execute", {"code": "result = api.call('GET /get')"})
    assert seen and "api_key=k3y%2Fwith%2Bplus%3Deq" in str(seen[0].url)  # the key really went out in the URL
    assert "HTTP Request: GET https://httpbin.test/get?api_key=[REDACTED]" in caplog.text, caplog.text
    assert KEY not in caplog.text and "k3y%2F" not in caplog.text


def test_short_secrets_are_refused_at_start_up() -> None:
    schemes = {"k": SecurityScheme("k", "apiKey", location="query", param_name="key")}
    with pytest.raises(ConfigError, match="CODEMODE_K is 4 characters long") as info:
        Credentials.from_env(schemes, {"CODEMODE_K": "abcd"})
    assert info.value.code == "config.short_secret"
    with pytest.raises(ConfigError, match="static header 'Authorization'"):
        seed_scrubber(None, {"Authorization": "Bearer abc"})
    seed_scrubber(None, {"X-Api-Version": "2"})  # not a credential header: not a secret, not refused


def test_static_header_values_are_seeded_into_the_servers_scrubber() -> None:
    settings = ServerSettings(upstream=UpstreamSettings(headers={"Authorization": "Bearer tok-0123456789"}))
    server = CodemodeServer(load_spec(str(PETSTORE)), settings, sandbox=LocalSandbox(), env={})
    assert server.scrubber.scrub_text("tok-0123456789 and Bearer tok-0123456789") == "[REDACTED] and [REDACTED]"


async def test_bare_token_of_a_static_header_echoed_by_httpbin_bearer(httpbin_url: str, sandbox: WasmSandbox) -> None:
    token = "sk-live-0123456789abcdef"
    settings = ServerSettings(
        upstream=UpstreamSettings(base_url=httpbin_url, headers={"Authorization": f"Bearer {token}"})
    )
    server = CodemodeServer(load_spec(str(HTTPBIN_SPEC)), settings, sandbox=sandbox, env={})
    text, is_error = await tool(server, "execute", {"code": "result = api.call('GET /bearer')"})
    assert not is_error, text
    assert executed(text)["result"] == {"authenticated": True, "token": "[REDACTED]"}


# -- finding 4: a guest value never replaces the operator's credential ----------------


async def test_guest_header_cannot_replace_a_static_authorization_header() -> None:
    recorder = Recorder({"authenticated": True})
    settings = ServerSettings(upstream=UpstreamSettings(headers={"Authorization": "Bearer sk-live-0123456789"}))
    server = CodemodeServer(load_spec(str(HTTPBIN_SPEC)), settings, sandbox=LocalSandbox(), upstream=recorder, env={})
    for call in ("api.auth.list_bearer", "lambda **kw: api.call('GET /bearer', **kw)"):
        code = (
            f"try:\n    ({call})(Authorization='Bearer attacker-token')\n"
            "except PermissionError as e:\n    result = str(e)"
        )
        text, is_error = await tool(server, "execute", {"code": code})
        assert not is_error and "by the server" in executed(text)["result"], text  # a catchable PermissionError
    assert recorder.requests == []  # never sent
    lower = UpstreamRequest(operation="x", method="GET", url="https://h/x", headers={"authorization": "Bearer x"})
    assert guest_override(lower, frozenset(), {"Authorization": "Bearer sk-live-0123456789"}) is not None


async def test_guest_query_and_cookie_cannot_replace_injected_credentials(tmp_path: Path) -> None:
    recorder = Recorder({"args": {}})
    spec = load_spec(str(httpbin_with_query_key(tmp_path)))
    env = {"CODEMODE_KEY": KEY}
    server = CodemodeServer(spec, ServerSettings(), sandbox=LocalSandbox(), upstream=recorder, env=env)
    reserved = server.credentials.reserved()
    assert ("query", "api_key") in reserved
    request = UpstreamRequest(operation="x", method="GET", url="https://h/x", params=[("API_KEY", "mine")])
    assert guest_override(request, reserved, {}) is not None
    cookie = UpstreamRequest(operation="x", method="GET", url="https://h/x", cookies={"sid": "mine"})
    assert guest_override(cookie, frozenset({("cookie", "sid")}), {}) is not None
    same = UpstreamRequest(operation="x", method="GET", url="https://h/x", headers={"accept": "a/b"})
    assert guest_override(same, frozenset(), {"Accept": "a/b"}) is None  # equal to the static one: no override
    # an operator's static Cookie header is one credential: no guest cookie goes beside it
    assert guest_override(cookie, frozenset(), {"Cookie": "session=sk-live-0123456789"}) is not None
    assert guest_override(cookie, frozenset(), {}) is None
    # a whole Cookie header (a header parameter named Cookie) would replace a cookie credential
    whole = UpstreamRequest(operation="x", method="GET", url="https://h/x", headers={"Cookie": "sid=mine; o=1"})
    assert guest_override(whole, frozenset({("cookie", "sid")}), {}) is not None
    assert guest_override(whole, frozenset({("query", "api_key")}), {}) is None


# -- finding 5: allow/deny patterns ----------------------------------------------------


async def test_deny_pattern_matches_methods_in_any_case() -> None:
    spec = load_spec(str(PETSTORE))
    recorder = Recorder(None)
    settings = ServerSettings(execute=ExecuteSettings(deny=("delete /pet/*",)))
    server = CodemodeServer(spec, settings, sandbox=LocalSandbox(), upstream=recorder, env={})
    code = "try:\n    api.pet.delete(1)\nexcept PermissionError as e:\n    result = str(e)"
    text, _ = await tool(server, "execute", {"code": code})
    assert "denied by this server's configuration" in executed(text)["result"]
    assert recorder.requests == []


@pytest.mark.parametrize(("flag", "pattern"), [("allow", "pet.get_pet_by_idd"), ("deny", "DELTE /pet/*")])
def test_a_pattern_that_matches_nothing_is_an_error_at_start_up(flag: str, pattern: str) -> None:
    settings = ServerSettings(execute=ExecuteSettings(**{flag: (pattern,)}))
    with pytest.raises(ConfigError, match=f"--{flag} '{re.escape(pattern)}' matches no operation") as info:
        CodemodeServer(load_spec(str(PETSTORE)), settings, sandbox=LocalSandbox(), env={})
    assert "Closest operations:" in info.value.message and info.value.code == "config.unmatched_pattern"


# -- finding 7: the policy pre-check is a friendly early error, the limits are the wall ---


async def test_direct_bridge_calls_count_against_max_calls(sandbox: WasmSandbox) -> None:
    """The guest client's own ``_call`` is reachable without a dunder; every call counts."""
    settings = ServerSettings(execute=ExecuteSettings(max_calls=5))
    server = CodemodeServer(load_spec(str(PETSTORE)), settings, sandbox=sandbox, upstream=Recorder({}), env={})
    code = """
hits = {"ok": 0, "refused": 0}
for i in range(100):
    ok, answer = api._call("invoke" if i % 2 else "spec", "not json")
    hits["refused" if "call limit" in answer else "ok"] += 1
result = hits
"""
    text, _ = await tool(server, "execute", {"code": code})
    assert executed(text)["result"] == {"ok": 5, "refused": 95}, text


# -- finding 8: the exact Host/Origin check --------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"host": "127.0.0.1:8123"}, 200),
        ({"host": "localhost:8123", "origin": "http://localhost:8123"}, 200),
        ({"host": "127.0.0.1:1.evil.example"}, 421),  # the SDK's prefix match accepts this
        ({"host": "127.0.0.1:8124"}, 421),
        ({"host": "127.0.0.1:8123", "origin": "http://127.0.0.1:1.evil.example"}, 403),
        ({"host": "127.0.0.1:8123", "origin": "http://evil.example"}, 403),
        ({"host": "127.0.0.1:8123", "origin": "null"}, 403),
        ({"host": "mcp.example.com", "origin": "https://mcp.example.com"}, 200),
    ],
)
async def test_exact_host_and_origin_check(headers: dict[str, str], status: int) -> None:
    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = ExactHostCheck(ok, host="127.0.0.1", port=8123, allowed_hosts=("mcp.example.com",))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        response = await client.get("/mcp", headers=headers)
    assert response.status_code == status, response.text


async def test_server_http_app_refuses_a_prefix_host() -> None:
    server = CodemodeServer(load_spec(str(PETSTORE)), ServerSettings(), sandbox=LocalSandbox(), env={})
    app = server.http_app("http", port=8123)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        response = await client.post("/mcp", headers={"host": "127.0.0.1:1.evil.example"}, json={})
    assert response.status_code == 421


async def test_an_exploded_object_cannot_smuggle_the_credential_query_name(tmp_path: Path) -> None:
    """``style: form, explode: true`` sends each key of an object as its own query parameter."""
    spec_path = tmp_path / "smuggle.json"
    spec_path.write_text(json.dumps({
        "openapi": "3.0.3", "info": {"title": "Smuggle", "version": "1"},
        "servers": [{"url": "https://api.test"}],
        "components": {"securitySchemes": {"key": {"type": "apiKey", "in": "query", "name": "api_key"}}},
        "security": [{"key": []}],
        "paths": {"/items": {"get": {"operationId": "listItems", "parameters": [
            {"name": "filter", "in": "query", "style": "form", "explode": True,
             "schema": {"type": "object", "additionalProperties": {"type": "string"}}}],
            "responses": {"200": {"description": "ok"}}}}},
    }))  # fmt: skip
    recorder = Recorder([])
    server = CodemodeServer(
        load_spec(str(spec_path)), ServerSettings(), sandbox=LocalSandbox(), upstream=recorder,
        env={"CODEMODE_KEY": KEY},
    )  # fmt: skip
    code = (
        "try:\n    api.call('listItems', filter={'API_KEY': 'attacker'})\n"
        "except PermissionError as e:\n    result = str(e)"
    )
    text, _ = await tool(server, "execute", {"code": code})
    assert "query parameter 'API_KEY' carries the server's credential" in executed(text)["result"], text
    assert recorder.requests == []
    text, _ = await tool(server, "execute", {"code": "result = api.call('listItems', filter={'colour': 'red'})"})
    assert recorder.requests and recorder.requests[0].params == [("colour", "red")]


# -- hygiene found on the way -----------------------------------------------------------


async def test_search_waits_for_the_index_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A search that arrives while the index builds must not stop every other session meanwhile."""
    import codemode._server as server_module

    real = server_module.SearchIndex

    def slow_index(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)  # a big spec's index build, holding the builder's thread
        return real(*args, **kwargs)

    monkeypatch.setattr(server_module, "SearchIndex", slow_index)
    server = CodemodeServer(load_spec(str(PETSTORE)), ServerSettings(), sandbox=LocalSandbox(), env={})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    result = await server.search(query="find pets by status")
    task.cancel()
    assert "find_pets_by_status" in result.content[0].text  # type: ignore[union-attr]
    assert ticks >= 30, ticks  # the loop kept running while the index was built


async def test_a_bridge_failure_logs_a_traceback_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-live-0123456789abcdef"

    class Broken(Recorder):
        async def send(self, request: UpstreamRequest) -> UpstreamResponse:
            raise RuntimeError(f"internal bug while sending with {secret}")

    settings = ServerSettings(upstream=UpstreamSettings(headers={"X-Api-Key": secret}))
    server = CodemodeServer(load_spec(str(PETSTORE)), settings, sandbox=LocalSandbox(), upstream=Broken(), env={})
    with caplog.at_level(logging.DEBUG, logger="codemode"):
        text, is_error = await tool(server, "execute", {"code": "api.pet.get_by_id(1)"})
    assert is_error and secret not in text
    tracebacks = [r for r in caplog.records if "Traceback" in r.getMessage() + (r.exc_text or "")]
    assert tracebacks and "RuntimeError" in caplog.text, caplog.text  # logged with its traceback
    assert secret not in caplog.text and "[REDACTED]" in caplog.text


def test_readme_counts_the_attack_programs() -> None:
    """The README's count of isolate attack programs is this file's (it once said 60 for 57)."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"`tests/test_attacks.py`: (\d+) programs run in the isolate", readme)
    assert found is not None and int(found.group(1)) == len(ATTACKS) + len(LEAKS), found


def test_a_failed_write_leaves_no_temporary_file_and_the_old_file_intact(tmp_path: Path) -> None:
    from codemode._paths import atomic_write

    target = tmp_path / "cache" / "entry.pickle"
    atomic_write(target, b"old")

    def broken(fh: Any) -> None:
        fh.write(b"half")
        raise RecursionError("a value pickle cannot write")

    with pytest.raises(RecursionError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["entry.pickle"]  # no .tmp left behind


def test_an_ir_that_cannot_be_pickled_is_served_uncached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from codemode import _cache

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise pickle.PicklingError("cannot pickle")

    monkeypatch.setattr(_cache.pickle, "dump", refuse)
    spec = _cache.load_spec(str(PETSTORE), cache_dir=tmp_path)
    assert spec.operations
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # neither an entry nor a .tmp
