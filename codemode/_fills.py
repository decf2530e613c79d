"""Which parameters the host fills in, hidden from the model's signatures.

A parameter is filled host-side when it carries a credential (an apiKey security scheme names
it, or the server's configuration marks it), when the spec leaves it only one value (a single
enum value or ``const``, a header with a default, the ``Accept``/``Content-Type`` headers), or
when the server's configuration sets it. The rules are the tables and small functions below;
the result is data in the IR (:class:`~codemode._ir.Fill` on a :class:`~codemode._ir.Param`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from ._ir import ApiSpec, Fill, Operation, Param, SecurityScheme

__all__ = ["MEDIA_HEADERS", "ParamFills", "apply_server_fills", "spec_fill"]

# Header parameters that describe the exchange itself: the host sets them from the spec.
MEDIA_HEADERS = frozenset({"accept", "content-type"})
# Parameter locations a credential parameter of the server's configuration may be in.
CREDENTIAL_LOCATIONS = frozenset({"query", "header", "cookie", "form", "body"})


def _same_name(a: str, b: str, location: str) -> bool:
    return a.lower() == b.lower() if location == "header" else a == b


def _only_value(schema: dict[str, Any]) -> tuple[bool, Any]:
    """``(True, v)`` when the schema allows exactly one value."""
    if "const" in schema:
        return True, schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and len(enum) == 1:
        return True, enum[0]
    return False, None


def spec_fill(
    name: str,
    location: str,
    required: bool,
    schema: dict[str, Any],
    schemes: Mapping[str, SecurityScheme],
    *,
    body_media: str | None,
    response_media: str | None,
) -> Fill | None:
    """The fill the spec itself implies for one parameter, or ``None`` (the model passes it)."""
    for scheme in schemes.values():
        if (
            scheme.type == "apiKey"
            and scheme.param_name
            and scheme.location == location
            and _same_name(scheme.param_name, name, location)
        ):
            return Fill("credential", scheme=scheme.name)
    single, value = _only_value(schema)
    if location == "header":
        lower = name.lower()
        if lower in MEDIA_HEADERS:
            if "default" in schema:
                return Fill("spec", value=schema["default"])
            if single:
                return Fill("spec", value=value)
            if lower == "accept":
                return Fill("spec", value=response_media)
            return Fill("spec", value=None if body_media else schema.get("default"))
        if single:
            return Fill("spec", value=value)
        if schema.get("default") is not None:
            return Fill("spec", value=schema["default"])
        return None
    if single and required and location in ("path", "query", "cookie"):
        return Fill("spec", value=value)
    return None


class ParamFills:
    """What a server's configuration fills in: credential parameter names, fixed values, static headers."""

    def __init__(
        self, credentials: Iterable[str] = (), values: Mapping[str, Any] | None = None, headers: Iterable[str] = ()
    ) -> None:
        self.credentials = tuple(credentials)
        self.values = dict(values or {})
        self.headers = frozenset(h.lower() for h in headers)

    def __bool__(self) -> bool:
        return bool(self.credentials or self.values or self.headers)

    def fill(self, param: Param) -> Fill | None:
        if param.location in CREDENTIAL_LOCATIONS and any(
            _same_name(c, param.name, param.location) for c in self.credentials
        ):
            return param.fill if param.fill is not None and param.fill.source == "credential" else Fill("credential")
        for key, value in self.values.items():
            if _same_name(key, param.name, param.location):
                return Fill("server", value=value)
        if param.location == "header" and param.name.lower() in self.headers:
            return Fill("server")  # the static header is sent by the upstream client itself
        return None


def _refilled(op: Operation, fills: ParamFills) -> Operation:
    params = tuple(replace(p, fill=f) if (f := fills.fill(p)) is not None else p for p in op.params)
    return op if params == op.params else replace(op, params=params)


def apply_server_fills(spec: ApiSpec, fills: ParamFills) -> ApiSpec:
    """``spec`` with the server's own fills marked on every operation (the spec itself is not changed)."""
    if not fills:
        return spec
    operations = tuple(_refilled(op, fills) for op in spec.operations)
    if all(a is b for a, b in zip(operations, spec.operations, strict=True)):
        return spec
    return replace(spec, operations=operations)
