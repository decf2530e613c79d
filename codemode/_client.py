"""The host side of the guest's typed client ``api``: finding, binding and validating a call.

Errors are written the way the model wrote the call
(``api.pets.get: missing required argument 'id'``). Also the lenient response check
and schema-shaped stand-in responses for dry runs. Building the HTTP request is
:mod:`codemode._request`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from jsonschema.exceptions import ValidationError

from ._errors import CallError, ConfigError
from ._ir import SCHEMA_REF_PREFIX, ApiSpec, Operation, Param
from ._render import ordered_params
from ._standin import stand_in
from ._validation import validator_class

__all__ = [
    "FILE_KEYS",
    "bind_arguments",
    "is_file_value",
    "resolve_base_url",
    "resolve_operation",
    "response_warning",
    "stand_in",
    "whole_numbers",
]

MAX_VALIDATION_ERRORS = 3
BODY_LOCATIONS = frozenset({"body", "form"})


def resolve_operation(spec: ApiSpec, target: str, *, by_target: bool) -> Operation:
    """``group.name``, or with ``api.call``: an operationId or ``"METHOD /path/template"``."""
    op = spec.operation(target)
    if op is not None:
        return op
    if by_target:
        method, _, path = target.strip().partition(" ")
        for candidate in spec.operations:
            if candidate.operation_id == target:
                return candidate
            if path and candidate.method == method.lower() and candidate.path == path.strip():
                return candidate
    close = difflib.get_close_matches(target, [o.key for o in spec.operations], n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join('api.' + c for c in close)}?" if close else " Use search() to find it."
    what = f"api.call({target!r})" if by_target else f"api.{target}"
    raise CallError(f"{what}: no such operation in {spec.title}.{hint}", code="call.unknown_operation")


def bind_arguments(op: Operation, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, tuple[Param, Any]]:
    """Map a call's arguments onto the operation's parameters (by Python name)."""
    where = f"api.{op.key}"
    path_params, rest = ordered_params(op)
    by_name = {p.py_name: p for p in op.visible_params}
    bound: dict[str, tuple[Param, Any]] = {}
    if len(args) > len(path_params):
        raise CallError(
            f"{where}: takes {len(path_params)} positional argument(s) "
            f"({', '.join(p.py_name for p in path_params) or 'none'}) but {len(args)} were given; "
            "pass the others by keyword.",
            code="call.bad_arguments",
        )
    for p, value in zip(path_params, args, strict=False):
        bound[p.py_name] = (p, value)
    for key, value in kwargs.items():
        found = by_name.get(key) or next((q for q in op.visible_params if q.name == key), None)
        filled = None if found is not None else _filled_param(op, key)
        if filled is not None:
            what = "a credential" if filled.fill is not None and filled.fill.source == "credential" else "set by it"
            raise CallError(
                f"{where}: {key!r} is filled in by the server ({what}); leave it out.", code="call.filled_param"
            )
        if found is None:
            close = difflib.get_close_matches(key, list(by_name), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CallError(f"{where}: unexpected keyword argument {key!r}{hint}.", code="call.bad_arguments")
        if found.py_name in bound:
            raise CallError(f"{where}: got multiple values for argument {found.py_name!r}.", code="call.bad_arguments")
        bound[found.py_name] = (found, value)
    missing = [p.py_name for p in [*path_params, *rest] if p.required and p.py_name not in bound]
    if missing:
        names = ", ".join(repr(m) for m in missing)
        raise CallError(f"{where}: missing required argument{'s' if len(missing) > 1 else ''} {names}.",
                        code="call.bad_arguments")  # fmt: skip
    # None means "not given", except for a body field whose schema allows null: there it is JSON null.
    return {k: v for k, v in bound.items() if v[1] is not None or v[0].required or _sends_null(v[0])}


def _filled_param(op: Operation, key: str) -> Param | None:
    """The hidden parameter ``key`` names (by Python name, or wire name; headers in any case)."""
    lower = key.lower()
    for p in op.params:
        if p.fill is not None and (
            key in (p.py_name, p.name) or (p.location in ("header", "cookie") and p.name.lower() == lower)
        ):
            return p
    return None


def _sends_null(param: Param) -> bool:
    if param.location not in BODY_LOCATIONS:
        return False
    schema = param.schema
    kind = schema.get("type")
    options = [*(schema.get("anyOf") or []), *(schema.get("oneOf") or [])]
    return bool(
        schema.get("nullable")
        or (isinstance(kind, list) and "null" in kind)
        or any(isinstance(o, dict) and o.get("type") == "null" for o in options)
    )


FILE_KEYS = frozenset({"filename", "content", "content_base64", "content_type"})


def is_file_value(value: Any) -> bool:
    """``{"filename", "content" | "content_base64", "content_type"}``: how guest code passes a file.

    Only those keys: an object field that merely has a ``content`` property is data, not a file.
    """
    return isinstance(value, dict) and ("content" in value or "content_base64" in value) and FILE_KEYS.issuperset(value)


def _is_binary(schema: dict[str, Any]) -> bool:
    return schema.get("format") == "binary" or "contentMediaType" in schema or schema.get("type") == "file"


def _readonly_required(spec: ApiSpec, err: ValidationError) -> bool:
    """A request may omit ``required`` properties that are ``readOnly`` (OAS 3.1 validators enforce them)."""
    if err.validator != "required" or not isinstance(err.instance, dict):
        return False
    if not isinstance(err.schema, dict):
        return False
    missing = [r for r in err.validator_value if r not in err.instance and f"'{r}'" in err.message]
    # defined beside the `required` list, in another member of the same allOf, or in the subschemas the
    # schema combines (Cloudflare's DNS record: `required` beside a oneOf of allOfs that define the fields)
    found: dict[str, list[Any]] = {}
    for props in (_allof_siblings(spec, err.schema), *_combined_properties(spec, err.schema)):
        for name, prop in props.items():
            found.setdefault(name, []).append(prop)
    for name in missing:
        if not found.get(name) or not any(_is_read_only(spec, prop) for prop in found[name]):
            return False
    return bool(missing)


def _combined_properties(spec: ApiSpec, schema: dict[str, Any], depth: int = 0) -> list[dict[str, Any]]:
    """The ``properties`` of a schema and of every schema it combines (``$ref``, ``allOf``, ``oneOf``,
    ``anyOf``), to a bounded depth."""
    if depth > 8:
        return []
    schema = _resolved(spec, schema)
    out = [schema["properties"]] if isinstance(schema.get("properties"), dict) else []
    for key in ("allOf", "oneOf", "anyOf"):
        for part in schema.get(key) or []:
            if isinstance(part, dict):
                out += _combined_properties(spec, part, depth + 1)
    return out


def _allof_siblings(spec: ApiSpec, member: dict[str, Any]) -> dict[str, Any]:
    """Properties defined by the other members of the named schema's ``allOf`` that ``member`` belongs to."""
    out: dict[str, Any] = {}
    for schema in spec.schemas.values():
        parts = schema.get("allOf") if isinstance(schema, dict) else None
        if not isinstance(parts, list):
            continue
        resolved = [_resolved(spec, p) for p in parts]
        if any(p is member or r is member for p, r in zip(parts, resolved, strict=True)):
            for part in resolved:
                out.update(part.get("properties") or {})
            break
    return out


def _resolved(spec: ApiSpec, schema: Any) -> dict[str, Any]:
    for _ in range(16):
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if not (isinstance(ref, str) and ref.startswith(SCHEMA_REF_PREFIX)):
            break
        schema = spec.schemas.get(ref[len(SCHEMA_REF_PREFIX) :], {})
    return schema if isinstance(schema, dict) else {}


def _is_read_only(spec: ApiSpec, schema: Any) -> bool:
    """``readOnly`` on the schema, on what it refers to, or on one of its allOf members."""
    for _ in range(16):
        if not isinstance(schema, dict):
            return False
        parts = [schema, *(p for p in schema.get("allOf") or [] if isinstance(p, dict))]
        if any(p.get("readOnly") is True for p in parts):
            return True
        ref = next((p["$ref"] for p in parts if isinstance(p.get("$ref"), str)), None)
        if ref is None or not ref.startswith(SCHEMA_REF_PREFIX):
            return False
        schema = spec.schemas.get(ref[len(SCHEMA_REF_PREFIX) :])
    return False


def _is_file_argument(schema: dict[str, Any], value: Any) -> bool:
    """A file (or a list of files) for a binary parameter: its content is the upstream's to judge."""
    if is_file_value(value) and _is_binary(schema):
        return True
    items = schema.get("items")
    return (
        isinstance(value, list)
        and bool(value)
        and isinstance(items, dict)
        and _is_binary(items)
        and all(is_file_value(v) for v in value)
    )


def _overlapping_branches(err: ValidationError) -> bool:
    """A ``oneOf`` the value fails only because several branches accept it: the spec's ambiguity (Cloudflare's
    IPv4-or-CIDR strings admit no value at all), left for the upstream to judge rather than refused here."""
    return err.validator == "oneOf" and "is valid under each of" in err.message


def whole_numbers(spec: ApiSpec, schema: Any, value: Any, depth: int = 0) -> Any:
    """``value`` with every whole float where the schema wants an integer made an int (``limit=n / 2``,
    ``count=3.0``): JSON Schema 2020-12 counts 3.0 as an integer, and ``3.0`` on the wire is refused by
    servers that parse integers."""
    schema = _resolved(spec, schema)
    if depth > 32 or not schema:
        return value
    if isinstance(value, float) and value.is_integer() and _wants_integer(spec, schema):
        return int(value)
    parts = [schema, *(_resolved(spec, p) for p in schema.get("allOf") or [] if isinstance(p, dict))]
    if isinstance(value, list):
        items = next((p["items"] for p in parts if isinstance(p.get("items"), dict)), None)
        return [whole_numbers(spec, items, v, depth + 1) for v in value] if items is not None else value
    if isinstance(value, dict):
        props: dict[str, Any] = {}
        for part in parts:
            props.update(part.get("properties") or {})
        extra: Any = next(
            (p["additionalProperties"] for p in parts if isinstance(p.get("additionalProperties"), dict)), {}
        )
        return {k: whole_numbers(spec, props.get(k, extra), v, depth + 1) for k, v in value.items()}
    return value


def _wants_integer(spec: ApiSpec, schema: dict[str, Any], depth: int = 0) -> bool:
    kinds: set[str] = set()
    stack = [schema]
    while stack and depth < 32:
        depth += 1
        node = _resolved(spec, stack.pop())
        kind = node.get("type")
        kinds.update([kind] if isinstance(kind, str) else [k for k in kind or [] if isinstance(k, str)])
        stack += [p for key in ("allOf", "anyOf", "oneOf") for p in node.get(key) or [] if isinstance(p, dict)]
    return "integer" in kinds and "number" not in kinds


def validate_arguments(spec: ApiSpec, op: Operation, bound: Mapping[str, tuple[Param, Any]]) -> None:
    """JSON Schema validation of each argument, in bounded time (see :mod:`codemode._validation`:
    linear-time patterns; past the run's deadline, :class:`~codemode._validation.ValidationTimeout`)."""
    cls = validator_class(spec.dialect)
    components = {"schemas": spec.schemas}
    problems: list[str] = []
    for py_name, (param, value) in bound.items():
        if not param.schema or _is_file_argument(param.schema, value):
            continue
        # formats checked as OpenAPI validators do: `oneOf: [ipv4, cidr]` is only decidable with them
        validator = cls({**param.schema, "components": components}, format_checker=cls.FORMAT_CHECKER)
        try:
            for err in validator.iter_errors(value):
                if _readonly_required(spec, err) or _overlapping_branches(err):
                    continue
                problems.append(_describe(py_name, err))
                if len(problems) >= MAX_VALIDATION_ERRORS:
                    break
        except RecursionError:  # a pathologically deep value or schema: let the upstream judge it
            continue
    if problems:
        raise CallError(f"api.{op.key}: " + "; ".join(problems) + ".", code="call.invalid_argument")


def response_warning(spec: ApiSpec, op: Operation, body: Any) -> str | None:
    """Lenient response check: the first mismatch with the documented schema, as a note; never an error."""
    resp = op.success_response()
    if resp is None or not resp.schema or body is None:
        return None
    validator = validator_class(spec.dialect)({**resp.schema, "components": {"schemas": spec.schemas}})
    try:
        for err in validator.iter_errors(body):
            where = "".join(f"[{p!r}]" for p in err.absolute_path) or " (top level)"
            message = err.message if len(err.message) <= 160 else err.message[:157] + "..."
            return f"api.{op.key}: the response differs from the spec at result{where}: {message}"
    except RecursionError:  # a very deep response: not worth a note
        return None
    return None


def _describe(py_name: str, err: ValidationError) -> str:
    where = py_name + "".join(f"[{p!r}]" for p in err.absolute_path)
    message = err.message if len(err.message) <= 200 else err.message[:197] + "..."
    return f"argument {where}: {message}"


def resolve_base_url(spec: ApiSpec, op: Operation, override: str | None) -> str:
    if override:
        return override.rstrip("/")
    servers = op.servers or spec.servers
    for url in servers:
        if url.startswith(("http://", "https://")):
            return url.rstrip("/")
    shown = f"its servers entry is relative ({servers[0]!r})" if servers else "it declares no servers"
    raise ConfigError(
        f"no base URL for {spec.title}: {shown}. Pass one with --base-url or UpstreamSettings.base_url.",
        code="config.no_base_url",
    )
