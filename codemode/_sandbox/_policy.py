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
* format strings reaching dunder attributes (``"{0.__class__}"``), and any string
  naming one of Python's own special names (``attrgetter("__init__.__globals__")``,
  ``methodcaller("__reduce__")``). Strings are data too: a dunder Python gives no meaning to
  (Box's metadata key ``Box__Security__Classification__Key``, Kinto's ``/__heartbeat__``,
  Kubernetes CEL's ``__dash__`` escapes) passes, as no attribute guard can be bypassed with it;
* imports outside the allow-list, relative imports and ``*`` imports.

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

__all__ = ["BLOCKED_BUILTINS", "HARMLESS_DUNDERS", "PYTHON_DUNDERS", "check_code"]

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
_FORMAT_DUNDER = re.compile(r"\{[^{}]*\.__")
#: The special names Python itself defines (data model, module and function attributes, builtins,
#: up to CPython 3.14, the guest's). A string naming one is how attribute guards are bypassed
#: (``attrgetter("__class__")``); a string with any other dunder (``Box__Security__Classification__Key``)
#: is data. ``tests/test_review_fidelity.py`` checks this covers the host interpreter's own names.
_SPECIAL_WORDS = """
    abs abstractmethods add aenter aexit aiter alloc and anext annotate annotate_func annotations
    annotations_cache args await base bases basicsize bool buffer build_class builtins bytes cached
    call cause ceil class class_getitem classcell classdict classdictcell closure code complex
    conditional_annotations contains context copy dataclass_fields dataclass_params debug deepcopy
    defaults del delattr delete delitem dict dictoffset dir divmod doc enter eq exit file final
    firstlineno flags float floor floordiv format fspath func ge get getattr getattribute
    getformat getinitargs getitem getnewargs getnewargs_ex getstate globals gt hash iadd iand ifloordiv
    ilshift imatmul imod import imul index init init_subclass instancecheck int invert ior ipow
    irshift isabstractmethod isub itemsize iter itruediv ixor kwdefaults le len length_hint loader lshift
    lt match_args matmul missing mod module mro mro_entries mul name ne neg new next objclass
    or orig_bases orig_class origin package parameters path pos post_init pow prepare qualname radd
    rand rdivmod reduce reduce_ex release_buffer repr reversed rfloordiv rlshift rmatmul rmod rmul ror
    round rpow rrshift rshift rsub rtruediv rxor self self_class set set_name setattr setitem
    setstate sizeof slots spec static_attributes str sub subclasscheck subclasses subclasshook
    suppress_context text_signature thisclass traceback truediv trunc type_params
    typing_unpacked_tuple_args unpacked weakref weakrefoffset wrapped xor
""".split()
PYTHON_DUNDERS = frozenset(f"__{word}__" for word in _SPECIAL_WORDS)
# One of those names inside a string (``attrgetter("__init__.__globals__")``, ``"__class__"``).
_STRING_DUNDER = re.compile(
    "|".join(re.escape(name) for name in sorted(PYTHON_DUNDERS - HARMLESS_DUNDERS, key=len, reverse=True))
)


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
        elif isinstance(node.value, str):
            found = set(_STRING_DUNDER.findall(node.value))
            if found:
                named = ", ".join(sorted(found))
                self.reject(node, f"strings naming Python's special attributes are not allowed ({named}); "
                            "they are how attribute guards are bypassed (attrgetter, methodcaller)")  # fmt: skip
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


def check_code(code: str, *, allowed_modules: frozenset[str]) -> None:
    """Raise :class:`UsageError` (``code.rejected`` / ``code.syntax``) unless ``code`` passes the policy."""
    try:
        tree = ast.parse(code, filename="<code>", mode="exec")
    except SyntaxError as exc:
        raise _syntax_error(exc) from None
    except ValueError as exc:  # e.g. source containing NUL bytes
        raise UsageError(f"syntax error: {exc}", code="code.syntax") from None

    policy = type("_BoundPolicy", (_Policy,), {"allowed_modules": frozenset(allowed_modules)})
    try:
        errors = list(compile_restricted_exec(tree, filename="<code>", policy=policy).errors)
    except (SyntaxError, ValueError, TypeError):  # pragma: no cover - compiling the transformed tree
        errors = []
    problems = sorted(set(errors), key=lambda text: (int(text.split(":", 1)[0].split()[1]), text))
    if problems:
        count = len(problems)
        head = f"the code was rejected by the sandbox policy ({count} problem{'s' if count > 1 else ''}):"
        raise UsageError("\n".join([head] + [f"  {text}" for text in problems]), code="code.rejected")
