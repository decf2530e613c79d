"""The second wall: a static check of model-written code before it runs.

The isolate (:mod:`._wasm`) is the security boundary; this check rejects
code that is plainly trying to reach around it, with a message a model can act
on. It parses the code and walks it with a policy subclass of RestrictedPython's
``RestrictingNodeTransformer``. Only the verdict is used: the ORIGINAL source
(not RestrictedPython's transformed code) is what runs in the isolate.

Rules (each problem is reported with its line):

* attributes starting with ``__`` (``x.__class__``), except ``super().__init__``
  and the read-only names ``__name__``, ``__qualname__``, ``__doc__``;
* names starting with ``__`` (``__builtins__``, ``__import__``), except dunder
  methods defined in a class body (``def __init__(self)``);
* the builtins ``exec eval compile open __import__ globals locals vars
  breakpoint input getattr setattr delattr``;
* frame/code/traceback introspection attributes (``f_globals``, ``tb_frame``...);
* format strings reaching dunder attributes (``"{0.__class__}"``): ``str.format`` reads
  attributes by name and cannot be guarded at run time;
* string annotations and ``ForwardRef("...")`` arguments are code (``typing.get_type_hints``
  evaluates them): they are parsed and held to these same rules;
* imports outside the allow-list, relative imports and ``*`` imports.

Every other string is data, whatever it contains: a path ``src/__init__.py``, a key
``{"__module__": ...}``, Box's ``Box__Security__Classification__Key``, Kinto's ``/__heartbeat__``.
Scanning data for special names stopped nothing (``"_" * 2 + "class" + "_" * 2`` builds the same
string) and refused real values; the guest guards the functions that turn a string into an
attribute access (``operator.attrgetter`` / ``methodcaller`` refuse dunders at run time) or into
code (a forward reference must be a type expression), and the isolate is the wall.

Single-underscore names (``_``, ``_private``, ``obj._asdict()``) are allowed:
RestrictedPython's own opinions (no ``_`` names, no augmented assignment of
attributes, no ``print``...) are deliberately dropped, as they guard
RestrictedPython's runtime, which is not used here.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from RestrictedPython.compile import compile_restricted_exec
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, RestrictingNodeTransformer

from .._errors import UsageError

__all__ = ["BLOCKED_BUILTINS", "HARMLESS_DUNDERS", "check_code"]

_DYNAMIC = "dynamic code execution is blocked"
_INTROSPECTION = "introspection builtins are blocked"
_NO_IO = "there is no file system or terminal in the sandbox"
BLOCKED_BUILTINS: dict[str, str] = {
    "exec": _DYNAMIC,
    "eval": _DYNAMIC,
    "compile": _DYNAMIC,
    "__import__": _DYNAMIC,
    "globals": _INTROSPECTION,
    "locals": _INTROSPECTION,
    "vars": _INTROSPECTION,
    "getattr": _INTROSPECTION,
    "setattr": _INTROSPECTION,
    "delattr": _INTROSPECTION,
    "open": _NO_IO,
    "input": _NO_IO,
    "breakpoint": _NO_IO,
}
#: Dunder attributes that only read a name or a docstring (``type(e).__name__``).
HARMLESS_DUNDERS = frozenset({"__name__", "__qualname__", "__doc__"})
#: Strings in annotations are parsed as code; a string annotation inside one is, up to this depth.
MAX_STRING_CODE_DEPTH = 4
_FORMAT_DUNDER = re.compile(r"\{[^{}]*\.__")


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


class _Policy(RestrictingNodeTransformer):
    """Codemode's rules on top of RestrictedPython's walker."""

    allowed_modules: frozenset[str] = frozenset()

    # RestrictedPython's own complaints are dropped (see module docstring);
    # ours go through `reject` into `errors` (formatted 'line N: ...').
    def error(self, node: ast.AST, info: str) -> None:
        return None

    def warn(self, node: ast.AST, info: str) -> None:
        return None

    def reject(self, node: ast.AST, message: str) -> None:
        line = int(getattr(node, "lineno", 0) or 0)
        self.errors.append(f"line {line}: {message}")

    def not_allowed(self, node: ast.AST) -> None:  # async, match, nonlocal...: harmless
        self.node_contents_visit(node)

    def check_name(self, node: Any, name: str | None, allow_magic_methods: bool = False) -> None:
        if name is None or not name.startswith("__") or name in HARMLESS_DUNDERS:
            return  # `if __name__ == "__main__":` is what models write
        if allow_magic_methods and _is_dunder(name) and getattr(node, "col_offset", 0) != 0:
            return  # a dunder method defined inside a class body
        if name in BLOCKED_BUILTINS:
            self.reject(node, f"use of {name!r} is not allowed ({BLOCKED_BUILTINS[name]})")
        else:
            self.reject(node, f"name {name!r} is not allowed (names starting with '__' are blocked)")

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id in BLOCKED_BUILTINS and not node.id.startswith("__"):
            self.reject(node, f"use of {node.id!r} is not allowed ({BLOCKED_BUILTINS[node.id]})")
        return super().visit_Name(node)

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        attr = node.attr
        if attr.startswith("__"):
            is_super_init = (
                attr == "__init__"
                and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)
                and node.value.func.id == "super"
            )
            if not is_super_init and attr not in HARMLESS_DUNDERS:
                self.reject(node, f"access to {attr!r} is not allowed (dunder attributes are blocked)")
        elif attr in INSPECT_ATTRIBUTES:
            self.reject(node, f"access to {attr!r} is not allowed (frame and code introspection is blocked)")
        return self.node_contents_visit(node)

    def visit_Constant(self, node: ast.Constant) -> Any:
        if isinstance(node.value, str) and _FORMAT_DUNDER.search(node.value):
            self.reject(node, "format fields reaching dunder attributes are not allowed (e.g. '{0.__class__}')")
        return self.node_contents_visit(node)

    def _check_module(self, node: ast.AST, module: str) -> None:
        if module not in self.allowed_modules:
            listing = ", ".join(sorted(self.allowed_modules))
            self.reject(node, f"import of {module!r} is not allowed (allowed modules: {listing})")

    def visit_Import(self, node: ast.Import) -> Any:
        for alias in node.names:
            self._check_module(node, alias.name)
            self.check_name(node, alias.asname)
        return self.node_contents_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        module = node.module or ""
        if node.level:
            self.reject(node, "relative imports are not allowed")
        elif module in self.allowed_modules:
            pass
        else:
            children = [f"{module}.{alias.name}" for alias in node.names]
            if not all(child in self.allowed_modules for child in children):
                self._check_module(node, module)
        for alias in node.names:
            if alias.name == "*":
                self.reject(node, "'*' imports are not allowed")
            self.check_name(node, alias.name)
            self.check_name(node, alias.asname)
        return self.node_contents_visit(node)


def _syntax_error(exc: SyntaxError) -> UsageError:
    line = exc.lineno or 0
    parts = [f"syntax error at line {line}: {exc.msg}"]
    if exc.text:
        text = exc.text.rstrip("\n")
        stripped = text.lstrip()
        parts.append("    " + stripped)
        column = max((exc.offset or 1) - 1 - (len(text) - len(stripped)), 0)
        parts.append("    " + " " * column + "^")
    return UsageError("\n".join(parts), code="code.syntax")


def _code_in_strings(tree: ast.Module | ast.Expression) -> list[ast.Expression]:
    """The strings of ``tree`` that Python evaluates as code, parsed: string annotations
    (``x: "int"``, ``def f() -> "list[A]"``) and ``ForwardRef("...")`` arguments. Each parsed
    expression carries its string's line; a string that does not parse is left as data. In an
    annotation parsed from a string, every string is an annotation again (``'list["A"]'``)."""
    spots: list[ast.AST] = [tree.body] if isinstance(tree, ast.Expression) else []
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            spots.append(node.annotation)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            spots.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            spots.append(node.returns)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name == "ForwardRef":
                spots.append(node.args[0])
    found: list[ast.Expression] = []
    for spot in spots:
        for const in ast.walk(spot):
            if not (isinstance(const, ast.Constant) and isinstance(const.value, str)):
                continue
            try:
                expr = ast.parse(const.value.strip(), mode="eval")
            except (SyntaxError, ValueError):
                continue
            for sub in ast.walk(expr):
                if isinstance(sub, (ast.expr, ast.arg, ast.keyword)):
                    sub.lineno = sub.end_lineno = const.lineno
                    sub.col_offset, sub.end_col_offset = const.col_offset, const.end_col_offset
            found.append(expr)
    return found


def _problems(tree: ast.Module | ast.Expression, allowed_modules: frozenset[str], depth: int = 0) -> list[str]:
    inner = _code_in_strings(tree) if depth < MAX_STRING_CODE_DEPTH else []  # before the walker rewrites it
    policy = type("_BoundPolicy", (_Policy,), {"allowed_modules": frozenset(allowed_modules)})
    module = tree if isinstance(tree, ast.Module) else ast.Module(body=[ast.Expr(tree.body)], type_ignores=[])
    ast.fix_missing_locations(module)
    try:
        errors = list(compile_restricted_exec(module, filename="<code>", policy=policy).errors)
    except (SyntaxError, ValueError, TypeError):  # pragma: no cover - compiling the transformed tree
        errors = []
    for expr in inner:
        errors += _problems(expr, allowed_modules, depth + 1)
    return errors


def check_code(code: str, *, allowed_modules: frozenset[str]) -> None:
    """Raise :class:`UsageError` (``code.rejected`` / ``code.syntax``) unless ``code`` passes the policy."""
    try:
        tree = ast.parse(code, filename="<code>", mode="exec")
    except SyntaxError as exc:
        raise _syntax_error(exc) from None
    except ValueError as exc:  # e.g. source containing NUL bytes
        raise UsageError(f"syntax error: {exc}", code="code.syntax") from None

    errors = _problems(tree, frozenset(allowed_modules))
    problems = sorted(set(errors), key=lambda text: (int(text.split(":", 1)[0].split()[1]), text))
    if problems:
        count = len(problems)
        head = f"the code was rejected by the sandbox policy ({count} problem{'s' if count > 1 else ''}):"
        raise UsageError("\n".join([head] + [f"  {text}" for text in problems]), code="code.rejected")
