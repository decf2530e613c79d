"""The host side of the guest's typed client ``api``.

It turns one guest call (operation, positional and keyword arguments) into a
validated :class:`~codemode._upstream.UpstreamRequest`, with errors written the
way the model wrote the call (``api.pets.get: missing required argument 'id'``).
It also makes schema-shaped stand-in responses for dry runs.
"""

from __future__ import annotations

import base64
import difflib
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator, OAS31Validator

from ._errors import CallError, ConfigError
from ._ir import SCHEMA_REF_PREFIX, ApiSpec, Operation, Param
from ._render import ordered_params
from ._upstream import NO_BODY, UpstreamRequest

__all__ = [
    "bind_arguments",
    "build_request",
    "resolve_base_url",
    "resolve_operation",
    "response_warning",
    "stand_in",
]

# Path parameters whose values may carry "/" unescaped (file paths, git refs, proxy paths).
SLASH_PARAMS = frozenset({"path", "filepath", "file_path", "ref", "key", "name_path"})
MAX_VALIDATION_ERRORS = 3


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
    by_name = {p.py_name: p for p in op.params}
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
        found = by_name.get(key) or next((q for q in op.params if q.name == key), None)
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
    return {k: v for k, v in bound.items() if v[1] is not None or v[0].required}


def validate_arguments(spec: ApiSpec, op: Operation, bound: Mapping[str, tuple[Param, Any]]) -> None:
    cls = OAS31Validator if spec.dialect == "oas31" else OAS30Validator
    components = {"schemas": spec.schemas}
    problems: list[str] = []
    for py_name, (param, value) in bound.items():
        if not param.schema:
            continue
        validator = cls({**param.schema, "components": components})
        try:
            for err in validator.iter_errors(value):
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
    cls = OAS31Validator if spec.dialect == "oas31" else OAS30Validator
    validator = cls({**resp.schema, "components": {"schemas": spec.schemas}})
    for err in validator.iter_errors(body):
        where = "".join(f"[{p!r}]" for p in err.absolute_path) or " (top level)"
        message = err.message if len(err.message) <= 160 else err.message[:157] + "..."
        return f"api.{op.key}: the response differs from the spec at result{where}: {message}"
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


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _file_part(value: Any) -> Any:
    if isinstance(value, dict) and ("content" in value or "content_base64" in value):
        raw = base64.b64decode(value["content_base64"]) if "content_base64" in value else str(value["content"]).encode()
        return (value.get("filename", "upload"), raw, value.get("content_type", "application/octet-stream"))
    return None


def build_request(
    spec: ApiSpec, op: Operation, bound: Mapping[str, tuple[Param, Any]], *, base_url: str | None
) -> UpstreamRequest:
    validate_arguments(spec, op, bound)
    path = op.path
    params: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    cookies: dict[str, str] = {}
    fields: dict[str, Any] = {}
    body: Any = NO_BODY
    for param, value in bound.values():
        loc = param.location
        if loc == "path":
            text = _scalar(value)
            safe = "/" if param.name.lower() in SLASH_PARAMS else ""
            if safe and any(seg in (".", "..") for seg in text.split("/")):
                raise CallError(
                    f"api.{op.key}: argument {param.py_name}: '.' and '..' segments are not allowed in a path.",
                    code="call.invalid_argument",
                )
            path = path.replace("{" + param.name + "}", quote(text, safe=safe))
        elif loc == "query":
            if isinstance(value, list) and param.explode is not False:
                params.extend((param.name, _scalar(v)) for v in value)
            elif isinstance(value, list):
                params.append((param.name, ",".join(_scalar(v) for v in value)))
            elif isinstance(value, dict) and param.style == "deepObject":
                params.extend((f"{param.name}[{k}]", _scalar(v)) for k, v in value.items())
            elif isinstance(value, dict) and param.explode is not False:
                params.extend((str(k), _scalar(v)) for k, v in value.items())
            else:
                params.append((param.name, _scalar(value)))
        elif loc == "header":
            headers[param.name] = _scalar(value)
        elif loc == "cookie":
            cookies[param.name] = _scalar(value)
        elif op.body is not None and op.body.flattened:
            fields[param.name] = value
        else:
            body = value
    url = resolve_base_url(spec, op, base_url) + path
    request = UpstreamRequest(
        operation=op.key, method=op.method.upper(), url=url, params=params, headers=headers, cookies=cookies,
        security=op.security,
    )  # fmt: skip
    media = op.body.media_type if op.body is not None else ""
    payload = fields if op.body is not None and op.body.flattened else body
    if op.body is None or (payload is NO_BODY or (payload == {} and not op.body.required)):
        return request
    from dataclasses import replace

    if media == "application/x-www-form-urlencoded" and isinstance(payload, dict):
        return replace(request, data={k: _scalar(v) for k, v in payload.items()})
    if media == "multipart/form-data" and isinstance(payload, dict):
        files = {k: f for k, v in payload.items() if (f := _file_part(v)) is not None}
        data = {k: _scalar(v) for k, v in payload.items() if k not in files}
        return replace(request, data=data, files=files or None)
    if "json" in media or not media:
        return replace(request, json=payload, headers={**headers, "Content-Type": media or "application/json"})
    raw = _file_part(payload)
    content = raw[1] if raw else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
    return replace(request, content=content, headers={**headers, "Content-Type": media})


def stand_in(spec: ApiSpec, schema: dict[str, Any] | None, depth: int = 0, seen: frozenset[str] = frozenset()) -> Any:
    """A schema-shaped example value for dry runs (examples first; cycle- and depth-safe)."""
    if not schema or depth > 6:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(SCHEMA_REF_PREFIX):
        name = ref[len(SCHEMA_REF_PREFIX) :]
        if name in seen:
            return None
        return stand_in(spec, spec.schemas.get(name), depth + 1, seen | {name})
    if "example" in schema:
        return schema["example"]
    if "default" in schema:
        return schema["default"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("oneOf", "anyOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return stand_in(spec, schema[key][0], depth + 1, seen)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for sub in schema["allOf"]:
            value = stand_in(spec, sub, depth + 1, seen)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), None) if isinstance(kind, list) else kind
    if kind == "array":
        item = stand_in(spec, schema.get("items"), depth + 1, seen)
        return [] if item is None else [item]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: stand_in(spec, v, depth + 1, seen) for k, v in list(props.items())[:25]}
    fmt = schema.get("format")
    samples: dict[Any, Any] = {
        ("string", "date-time"): "2026-01-01T00:00:00Z", ("string", "date"): "2026-01-01",
        ("string", "uuid"): "00000000-0000-0000-0000-000000000000", ("string", "email"): "user@example.com",
        ("string", "uri"): "https://example.com/", ("integer", None): 0, ("number", None): 0.0,
        ("boolean", None): False, ("string", None): "string",
    }  # fmt: skip
    return samples.get((kind, fmt), samples.get((kind, None)))
