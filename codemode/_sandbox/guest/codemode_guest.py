"""The guest runtime: runs model-written code in a fresh namespace.

This module runs *inside* the WebAssembly isolate (CPython 3.14 built by
componentize-py) and, for :class:`codemode._sandbox.LocalSandbox` only, inside
the host. It has no package-relative imports so it can be copied into the
component build as a top-level module.

Everything the model's code may import is imported here, at module level, so
componentize-py's build-time snapshot contains it: nothing else exists at run
time inside the isolate.

The host is reached through one function, ``call(channel, payload_json)``,
returning ``(ok, payload_json)``. :func:`execute` returns the JSON document
the host parses into a ``RunOutcome``.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import json
import operator
import sys
import types
import typing
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = [
    "GUEST_MODULES",
    "ApiError",
    "CallLimitExceeded",
    "execute",
]

#: The stdlib modules model code may import. Preloaded at build time.
GUEST_MODULES: frozenset[str] = frozenset(
    {
        "base64", "bisect", "calendar", "cmath", "collections", "collections.abc",
        "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum",
        "fractions", "functools", "hashlib", "heapq", "hmac", "html", "io",
        "itertools", "json", "math", "operator", "pprint", "random", "re",
        "statistics", "string", "textwrap", "time", "typing", "unicodedata",
        "urllib.parse", "uuid",
    }
)  # fmt: skip

for _name in sorted(GUEST_MODULES):  # executed at build time: the snapshot keeps them
    importlib.import_module(_name)
del _name

Call = Callable[[str, str], tuple[bool, str]]
CODE_FILENAME = "<code>"
MAX_ERROR_CHARS = 4000
_REMOVED_BUILTINS = ("open", "input", "breakpoint", "help", "exit", "quit", "copyright", "credits", "license")


class ApiError(Exception):
    """The upstream API answered with an error. ``str(err)`` is the message."""

    def __init__(self, message: str, status: int | None = None, body: Any = None, operation: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = body
        self.operation = operation


class CallLimitExceeded(RuntimeError):
    """Too many API calls (or another per-run call limit) in this execution."""


_KIND_TO_EXC: dict[str, type[BaseException]] = {
    "usage": TypeError,
    "unknown_operation": AttributeError,
    "not_allowed": PermissionError,
    "limit": CallLimitExceeded,
}


def _raise_for_err(payload: str) -> None:
    try:
        err = json.loads(payload)
    except ValueError:
        err = {"kind": "internal", "message": payload}
    if not isinstance(err, dict):
        err = {"kind": "internal", "message": str(err)}
    kind = err.get("kind")
    message = str(err.get("message", ""))
    if kind == "api_error":
        status = err.get("status")
        raise ApiError(message, status if isinstance(status, int) else None, err.get("body"), err.get("operation"))
    exc = _KIND_TO_EXC.get(str(kind), RuntimeError)
    raise exc(message)


def _request(call: Call, channel: str, payload: Any) -> Any:
    ok, answer = call(channel, json.dumps(payload, ensure_ascii=True))
    if not ok:
        _raise_for_err(answer)
    return json.loads(answer)


def _check_json(what: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} is not JSON-serialisable ({type(value).__name__}): {exc}") from None


def _invoke(call: Call, op: str, args: tuple[Any, ...], kwargs: dict[str, Any], by: str | None) -> Any:
    for i, arg in enumerate(args):
        _check_json(f"argument {i + 1} of {op}", arg)
    for key, arg in kwargs.items():
        _check_json(f"argument {key!r} of {op}", arg)
    payload: dict[str, Any] = {"op": op, "args": list(args), "kwargs": kwargs}
    if by is not None:
        payload["by"] = by
    return _request(call, "invoke", payload)


class _Group:
    __slots__ = ("_call", "_group")

    def __init__(self, call: Call, group: str) -> None:
        self._call = call
        self._group = group

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        op = f"{self._group}.{name}"
        call = self._call

        def operation(*args: Any, **kwargs: Any) -> Any:
            return _invoke(call, op, args, kwargs, None)

        operation.__name__ = name
        operation.__qualname__ = op
        return operation

    def __repr__(self) -> str:
        return f"<api group {self._group!r}>"


class _Api:
    """``api.<group>.<name>(...)`` and ``api.call(target, ...)``."""

    __slots__ = ("_call",)

    def __init__(self, call: Call) -> None:
        self._call = call

    def call(self, target: str, /, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(target, str):
            raise TypeError("api.call() target must be a string: an operationId or 'METHOD /path'")
        return _invoke(self._call, target, args, kwargs, "target")

    def __getattr__(self, name: str) -> _Group:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Group(self._call, name)

    def __repr__(self) -> str:
        return "<api>"


class _Spec:
    """Read-only view of the API spec, fetched lazily from the host."""

    __slots__ = ("_cache", "_call")

    def __init__(self, call: Call) -> None:
        self._call = call
        self._cache: dict[str, Any] = {}

    def _get(self, what: str) -> Any:
        if what not in self._cache:
            self._cache[what] = _request(self._call, "spec", {"what": what})
        return self._cache[what]

    @property
    def operations(self) -> list[Any]:
        return list(self._get("operations"))

    @property
    def schemas(self) -> list[str]:
        return list(self._get("schemas"))

    @property
    def info(self) -> dict[str, Any]:
        return dict(self._get("info"))

    def schema(self, name: str) -> dict[str, Any]:
        if not isinstance(name, str):
            raise TypeError("spec.schema() takes a schema name (str)")
        answer = _request(self._call, "spec", {"what": "schema", "name": name})
        return dict(answer) if isinstance(answer, dict) else answer

    def __repr__(self) -> str:
        return "<spec>"


class _Output:
    """print() capture with a byte cap: past the cap nothing more is stored."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.size = 0
        self.parts: list[str] = []
        self.truncated = False

    def write(self, text: str) -> None:
        if self.truncated:
            return
        data = text.encode("utf-8", "replace")
        room = self.cap - self.size
        if len(data) > room:
            self.parts.append(data[: max(room, 0)].decode("utf-8", "ignore"))
            self.size = self.cap
            self.truncated = True
            return
        self.parts.append(text)
        self.size += len(data)

    def print(
        self, *args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False
    ) -> None:
        sep = " " if sep is None else sep
        end = "\n" if end is None else end
        self.write(sep.join(str(a) for a in args) + end)


def _no_dunder(kind: str, names: tuple[Any, ...]) -> None:
    for name in names:
        if isinstance(name, str) and any(p.startswith("__") for p in name.split(".")):
            raise AttributeError(f"{kind}() of dunder attributes is not allowed ({name!r})")


def _attrgetter(*names: Any) -> Any:
    _no_dunder("attrgetter", names)
    return operator.attrgetter(*names)


def _methodcaller(name: Any, /, *args: Any, **kwargs: Any) -> Any:
    _no_dunder("methodcaller", (name,))
    return operator.methodcaller(name, *args, **kwargs)


#: Functions of allowed modules replaced in the guest's view of them.
_GUARDED: dict[tuple[str, str], Any] = {
    ("operator", "attrgetter"): _attrgetter,
    ("operator", "methodcaller"): _methodcaller,
}


#: What a forward reference (``ForwardRef("list[Pet] | None")``, a string annotation, a ``TypedDict``
#: field given as a string) may be: a type expression. typing evaluates it with ``eval``, so anything
#: more (a call, a dunder, ``eval`` itself) would be code that no policy check ever saw.
_TYPE_EXPRESSION_NODES = (
    ast.Expression, ast.Name, ast.Attribute, ast.Subscript, ast.Tuple, ast.List, ast.Constant, ast.BinOp,
    ast.BitOr, ast.UnaryOp, ast.USub, ast.Load,
)  # fmt: skip
_NOT_TYPES = frozenset({"eval", "exec", "compile", "getattr", "setattr", "delattr", "globals", "locals", "vars"})


def _type_expression(arg: object) -> None:
    if not isinstance(arg, str):
        return  # typing refuses it itself
    try:
        tree = ast.parse(arg.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return  # typing raises its own SyntaxError
    for node in ast.walk(tree):
        bad = not isinstance(node, _TYPE_EXPRESSION_NODES)
        bad = bad or (isinstance(node, ast.BinOp) and not isinstance(node.op, ast.BitOr))
        bad = bad or (isinstance(node, ast.Name) and (node.id.startswith("__") or node.id in _NOT_TYPES))
        bad = bad or (isinstance(node, ast.Attribute) and node.attr.startswith("_"))
        if bad:
            raise TypeError(
                f"forward reference {arg[:200]!r} is not a type expression (names, attributes, subscripts, "
                "literals and | only)"
            )


def _guard_forward_references() -> None:
    """Every string typing will evaluate becomes a ``ForwardRef`` first: check it there. Only in the
    isolate: the host's own libraries (pydantic) evaluate their annotations through the same class."""
    forward_ref: Any = typing.ForwardRef
    real_init = forward_ref.__init__

    def guarded_init(self: Any, arg: Any, *args: Any, **kwargs: Any) -> None:
        _type_expression(arg)
        real_init(self, arg, *args, **kwargs)

    forward_ref.__init__ = guarded_init


if sys.platform == "wasi":  # at build time: the snapshot keeps it
    _guard_forward_references()


class _Views:
    """What ``import`` gives model code: a view of each allowed module without the modules it
    imported for itself (``typing.sys``, ``dataclasses.inspect``, ``random._os``), so that
    ``sys``, ``os`` and ``inspect`` are not one attribute away. The real modules are untouched.

    A cheap guard, not a wall (the isolate is the wall): functions in these modules still
    hold their real globals, which the policy check keeps out of reach of ordinary code.
    """

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed
        self.views: dict[str, types.ModuleType] = {}

    def _visible(self, owner: str, value: types.ModuleType) -> bool:
        name = value.__name__
        return name in self.allowed or name.startswith(owner + ".")

    def view(self, module: types.ModuleType) -> types.ModuleType:
        name = module.__name__
        if name in self.views:
            return self.views[name]
        view = types.ModuleType(name, module.__doc__)
        self.views[name] = view  # before filling: modules may refer to each other
        for key, value in list(vars(module).items()):
            if isinstance(value, types.ModuleType):
                if self._visible(name, value):
                    setattr(view, key, self.view(value))
            elif (name, key) in _GUARDED:
                setattr(view, key, _GUARDED[(name, key)])
            elif key not in ("__loader__", "__spec__", "__builtins__", "__path__", "__file__", "__cached__"):
                setattr(view, key, value)
        return view


def _make_import(allowed: frozenset[str]) -> Callable[..., Any]:
    real_import = builtins.__import__
    listing = ", ".join(sorted(allowed))
    views = _Views(allowed)

    def guarded_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        from_children = bool(fromlist) and all(f"{name}.{child}" in allowed for child in fromlist)
        if level != 0 or not (name in allowed or from_children):
            raise ImportError(f"import of {name!r} is not allowed; allowed modules: {listing}")
        return views.view(real_import(name, globals, locals, fromlist, 0))

    return guarded_import


def _namespace(call: Call, inject: list[str], out: _Output) -> dict[str, Any]:
    safe_builtins = dict(builtins.__dict__)
    for name in _REMOVED_BUILTINS:
        safe_builtins.pop(name, None)
    safe_builtins["__import__"] = _make_import(GUEST_MODULES)
    safe_builtins["print"] = out.print
    ns: dict[str, Any] = {
        "__builtins__": safe_builtins,
        "__name__": "__main__",
        "ApiError": ApiError,
        "CallLimitExceeded": CallLimitExceeded,
    }
    if "api" in inject:
        ns["api"] = _Api(call)
    if "spec" in inject:
        ns["spec"] = _Spec(call)
    return ns


def _code_frames(tb: TracebackType | None) -> list[tuple[int, str]]:
    frames: list[tuple[int, str]] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == CODE_FILENAME:
            frames.append((tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    return frames


def _safe_str(value: object, limit: int = MAX_ERROR_CHARS) -> str:
    """str(value), capped; never raises (the value's __str__ is model code)."""
    try:
        text = str(value)
    except BaseException as exc:  # noqa: BLE001 - model code may raise anything here
        text = f"<str() failed: {type(exc).__name__}>"
    if len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit} more characters]"
    return text


def _error(exc: BaseException, lines: list[str]) -> dict[str, Any]:
    kind = _safe_str(type(exc).__name__, 200)
    message = _safe_str(exc)
    if isinstance(exc, SyntaxError) and exc.filename == CODE_FILENAME:
        line = exc.lineno if isinstance(exc.lineno, int) else None
        message = _safe_str(exc.msg)
        text = lines[line - 1] if line and 0 < line <= len(lines) else (exc.text or "")
        caret = " " * min(max((exc.offset or 1) - 1, 0), 500) + "^"
        trace = f'  File "<code>", line {line}\n    {_safe_str(text).rstrip()}\n    {caret}\n{kind}: {message}'
        return {"type": kind, "message": message, "line": line, "traceback": trace}
    frames = _code_frames(exc.__traceback__)[-20:]
    out = ["Traceback (most recent call last):"]
    for lineno, func in frames:
        out.append(f'  File "<code>", line {lineno}, in {func}')
        if 0 < lineno <= len(lines):
            out.append("    " + lines[lineno - 1].strip()[:500])
    out.append(f"{kind}: {message}" if message else kind)
    line_no = frames[-1][0] if frames else None
    return {"type": kind, "message": message, "line": line_no, "traceback": "\n".join(out)}


def _to_json(value: Any, notes: list[str]) -> str:
    converted: set[str] = set()

    def default(obj: Any) -> Any:
        if isinstance(obj, (set, frozenset)):
            try:
                return sorted(obj)
            except TypeError:
                return list(obj)
        if isinstance(obj, (bytes, bytearray)):
            name = type(obj).__name__
            if name not in converted:
                converted.add(name)
                notes.append(f"result: {name} values were decoded as UTF-8 text")
            return bytes(obj).decode("utf-8", "replace")
        name = type(obj).__name__
        if name not in converted:
            converted.add(name)
            notes.append(f"result: {name} values are not JSON and were converted with str()")
        return str(obj)

    return json.dumps(value, default=default, ensure_ascii=True)


def execute(code: str, options: str, call: Call) -> str:
    """Run ``code``; return the outcome as a JSON document (see the package docs)."""
    opts = json.loads(options)
    out = _Output(int(opts.get("max_output_bytes", 64_000)))
    max_result = int(opts.get("max_result_bytes", 256_000))
    ns = _namespace(call, list(opts.get("inject", ["api"])), out)
    lines = code.splitlines()
    notes: list[str] = []
    error: dict[str, Any] | None = None
    result_json = "null"
    try:
        compiled = compile(code, CODE_FILENAME, "exec", dont_inherit=True)
        exec(compiled, ns)  # noqa: S102 - running the model's code is the point; the isolate contains it
    # Guest-side boundary: anything the model's code raises (SystemExit,
    # KeyboardInterrupt and bare BaseException included) is reported, not fatal.
    except BaseException as exc:  # noqa: BLE001
        error = _error(exc, lines)
    if error is None and "result" in ns:
        try:
            result_json = _to_json(ns["result"], notes)
        # `result` may be any model object whose __str__/__iter__ is model code.
        except BaseException as exc:  # noqa: BLE001
            message = f"`result` could not be converted to JSON: {_safe_str(exc)}"
            error = {"type": type(exc).__name__, "message": message, "line": None, "traceback": ""}
        else:
            size = len(result_json)  # ASCII-escaped: never smaller than the UTF-8 size
            if size > max_result:  # measure what the limit means: UTF-8 bytes of the JSON
                size = len(json.dumps(json.loads(result_json), ensure_ascii=False).encode("utf-8", "surrogatepass"))
            if size > max_result:
                result_json = "null"
                error = {
                    "type": "ResultTooLarge",
                    "message": f"`result` is {size} bytes of JSON, over max_result_bytes={max_result}",
                    "line": None,
                    "traceback": "",
                    "limit": "max_result_bytes",
                }
    head = json.dumps(
        {"stdout": "".join(out.parts), "stdout_truncated": out.truncated, "notes": notes, "error": error},
        ensure_ascii=True,
    )
    return head[:-1] + ', "result": ' + result_json + "}"
