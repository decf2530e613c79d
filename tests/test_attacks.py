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

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from codemode._errors import UsageError
from codemode._sandbox import GUEST_MODULES, RunOutcome, SandboxLimits, WasmSandbox, check_code, default_cache_dir

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


def test_no_file_written_on_host() -> None:
    assert not os.path.exists("/tmp/codemode-pwned")
