# ruff: noqa: E501  (tables of exact expected messages read better unwrapped)
"""The RestrictedPython policy check (the wall before the isolate)."""

from __future__ import annotations

import pytest

from codemode._errors import UsageError
from codemode._sandbox import GUEST_MODULES, check_code

ALLOWED_LIST = ", ".join(sorted(GUEST_MODULES))

ACCEPTED = {
    "loop_underscore": "for _ in range(3):\n    pass",
    "fstring": "name = 'x'\nprint(f'{name!r:>10} {1 + 2}')",
    "comprehensions": "a = [i for i in range(3)]\nb = {i: i for i in a}\nc = {i for i in a}\nd = sum(i for i in a)",
    "try_api_error": "try:\n    api.pets.get(1)\nexcept ApiError as e:\n    print(e.status, e.body, e.operation)",
    "call_limit": "try:\n    api.call('GET /pets')\nexcept CallLimitExceeded:\n    pass",
    "classes": (
        "class Pet:\n    def __init__(self, name):\n        self.name = name\n        self.n = 0\n"
        "    def __repr__(self):\n        return f'Pet({self.name})'\n"
        "class Oops(Exception):\n    def __init__(self, m):\n        super().__init__(m)\n"
    ),
    "lambda": "key = lambda p: p['name']\nresult = sorted([{'name': 'b'}], key=key)",
    "print_and_result": "print('hi')\nresult = {'a': 1}",
    "augmented_assignment": "d = {'a': 1}\nd['a'] += 1\nclass C:\n    n = 0\nC.n += 1\nx = 1\nx *= 3",
    "imports": "import json\nimport collections.abc\nfrom urllib import parse\nfrom urllib.parse import quote\n"
    "from collections import Counter as C\nimport datetime as dt",
    "single_underscore_names": "_private = 1\n_ = 2\nrows = [1]._private if False else 3\nt = (1, 2)\nx = {}._x if False else 0",
    "namedtuple_private_methods": "import collections\nP = collections.namedtuple('P', 'a b')\nq = P(1, 2)._replace(a=3)._asdict()",
    "type_name": "try:\n    1 / 0\nexcept Exception as e:\n    print(type(e).__name__)",
    "match_and_walrus": "match [1, 2]:\n    case [a, *rest]:\n        pass\nif (n := 3) > 2:\n    pass",
    "nonlocal_and_global": "g = 0\ndef f():\n    global g\n    x = 1\n    def h():\n        nonlocal x\n        x += 1\n    h()\n    g = x",
    "generators": "def gen():\n    yield 1\n    yield from [2, 3]\nresult = list(gen())",
    "with_and_async_def": "import io\nwith io.StringIO() as f:\n    f.write('x')\nasync def a():\n    return 1",
    "format_without_dunder": "result = '{0} {name.real}'.format(1, name=2)",
    "attribute_named_like_builtin": "import re\nm = re.compile('a')\nv = m.pattern",
}

REJECTED = {
    "dunder_attribute": (
        "x = ()\ny = 1\nz = x.__class__",
        ["line 3: access to '__class__' is not allowed (dunder attributes are blocked)"],
    ),
    "subclass_walk": (
        "().__class__.__bases__[0].__subclasses__()",
        [
            "line 1: access to '__bases__' is not allowed (dunder attributes are blocked)",
            "line 1: access to '__class__' is not allowed (dunder attributes are blocked)",
            "line 1: access to '__subclasses__' is not allowed (dunder attributes are blocked)",
        ],
    ),
    "dunder_name": (
        "__builtins__['x'] = 1",
        ["line 1: name '__builtins__' is not allowed (names starting with '__' are blocked)"],
    ),
    "dunder_function": (
        "def __evil__():\n    pass",
        ["line 1: name '__evil__' is not allowed (names starting with '__' are blocked)"],
    ),
    "dunder_import": (
        "__import__('os')",
        ["line 1: use of '__import__' is not allowed (dynamic code execution is blocked)"],
    ),
    "exec": ("exec('1')", ["line 1: use of 'exec' is not allowed (dynamic code execution is blocked)"]),
    "eval": ("x = eval('1')", ["line 1: use of 'eval' is not allowed (dynamic code execution is blocked)"]),
    "compile": (
        "compile('1', 'f', 'exec')",
        ["line 1: use of 'compile' is not allowed (dynamic code execution is blocked)"],
    ),
    "open": (
        "open('/etc/passwd')",
        ["line 1: use of 'open' is not allowed (there is no file system or terminal in the sandbox)"],
    ),
    "input": (
        "input()",
        ["line 1: use of 'input' is not allowed (there is no file system or terminal in the sandbox)"],
    ),
    "breakpoint": (
        "breakpoint()",
        ["line 1: use of 'breakpoint' is not allowed (there is no file system or terminal in the sandbox)"],
    ),
    "globals": ("g = globals()", ["line 1: use of 'globals' is not allowed (introspection builtins are blocked)"]),
    "locals": ("g = locals()", ["line 1: use of 'locals' is not allowed (introspection builtins are blocked)"]),
    "vars": ("g = vars()", ["line 1: use of 'vars' is not allowed (introspection builtins are blocked)"]),
    "getattr": ("getattr(1, 'real')", ["line 1: use of 'getattr' is not allowed (introspection builtins are blocked)"]),
    "setattr": (
        "setattr(api, 'x', 1)",
        ["line 1: use of 'setattr' is not allowed (introspection builtins are blocked)"],
    ),
    "delattr": ("delattr(api, 'x')", ["line 1: use of 'delattr' is not allowed (introspection builtins are blocked)"]),
    "builtin_as_value": (
        "f = getattr\nf(1, 'real')",
        ["line 1: use of 'getattr' is not allowed (introspection builtins are blocked)"],
    ),
    "import_os": ("import os", [f"line 1: import of 'os' is not allowed (allowed modules: {ALLOWED_LIST})"]),
    "from_import_subprocess": (
        "from subprocess import run",
        [f"line 1: import of 'subprocess' is not allowed (allowed modules: {ALLOWED_LIST})"],
    ),
    "import_urllib_request": (
        "import urllib.request",
        [f"line 1: import of 'urllib.request' is not allowed (allowed modules: {ALLOWED_LIST})"],
    ),
    "from_urllib_import_request": (
        "from urllib import parse, request",
        [f"line 1: import of 'urllib' is not allowed (allowed modules: {ALLOWED_LIST})"],
    ),
    "relative_import": ("from . import x", ["line 1: relative imports are not allowed"]),
    "star_import": ("from json import *", ["line 1: '*' imports are not allowed"]),
    "frame_introspection": (
        "try:\n    1 / 0\nexcept Exception as e:\n    f = e.__traceback__.tb_frame.f_back",
        [
            "line 4: access to '__traceback__' is not allowed (dunder attributes are blocked)",
            "line 4: access to 'f_back' is not allowed (frame and code introspection is blocked)",
            "line 4: access to 'tb_frame' is not allowed (frame and code introspection is blocked)",
        ],
    ),
    "gi_frame": (
        "def g():\n    yield 1\nx = g().gi_frame",
        ["line 3: access to 'gi_frame' is not allowed (frame and code introspection is blocked)"],
    ),
    "format_dunder": (
        "s = '{0.__class__.__init__.__globals__}'.format(api)",
        ["line 1: format fields reaching dunder attributes are not allowed (e.g. '{0.__class__}')"],
    ),
    "dunder_import_alias": (
        "import json as __j",
        ["line 1: name '__j' is not allowed (names starting with '__' are blocked)"],
    ),
    "dunder_argument": (
        "def f(__x):\n    pass",
        ["line 1: name '__x' is not allowed (names starting with '__' are blocked)"],
    ),
    "dict_dunder": (
        "class A:\n    pass\nA.__dict__",
        ["line 3: access to '__dict__' is not allowed (dunder attributes are blocked)"],
    ),
}


@pytest.mark.parametrize("code", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted(code: str) -> None:
    check_code(code, allowed_modules=GUEST_MODULES)


@pytest.mark.parametrize(("code", "problems"), REJECTED.values(), ids=REJECTED.keys())
def test_rejected_with_exact_message(code: str, problems: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        check_code(code, allowed_modules=GUEST_MODULES)
    assert info.value.code == "code.rejected"
    count = len(problems)
    head = f"the code was rejected by the sandbox policy ({count} problem{'s' if count > 1 else ''}):"
    assert info.value.message == "\n".join([head] + [f"  {p}" for p in problems])


def test_every_problem_is_listed_in_line_order() -> None:
    code = "import os\nx = 1\ny = ().__class__\nz = eval('2')\n"
    with pytest.raises(UsageError) as info:
        check_code(code, allowed_modules=GUEST_MODULES)
    lines = info.value.message.splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == ["line 1", "line 3", "line 4"]


def test_allow_list_is_a_parameter() -> None:
    check_code("import os", allowed_modules=frozenset({"os"}))
    with pytest.raises(UsageError, match="import of 'json' is not allowed"):
        check_code("import json", allowed_modules=frozenset({"os"}))


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("x = 1\nfoo(\n", "syntax error at line 2: '(' was never closed\n    foo(\n       ^"),
        ("x = 1\n  y = 2\n", "syntax error at line 2: unexpected indent\n    y = 2\n    ^"),
        ("if x:\n    y = 1 +* 2\n", "syntax error at line 2: invalid syntax\n    y = 1 +* 2\n           ^"),
    ],
)
def test_syntax_errors(code: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        check_code(code, allowed_modules=GUEST_MODULES)
    assert info.value.code == "code.syntax"
    assert info.value.message == message


def test_null_byte_is_a_syntax_error() -> None:
    with pytest.raises(UsageError) as info:
        check_code("x = 1\x00", allowed_modules=GUEST_MODULES)
    assert info.value.code == "code.syntax"


def test_check_does_not_emit_warnings() -> None:
    # RestrictedPython warns about `print` use via the warnings module; -W error would turn that into a failure
    check_code("print(1)\nprinted = 2", allowed_modules=GUEST_MODULES)
