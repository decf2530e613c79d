"""Turning a bound, validated call into an :class:`~codemode._upstream.UpstreamRequest`.

Serialisation follows the spec's parameter ``style``/``explode`` (Swagger 2.0
``collectionFormat`` is mapped onto them when the IR is built). Values that could
change the request's meaning are refused: empty or dot path segments (they would
leave the operation's path), CR/LF in headers, separators in cookies.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from ._client import is_file_value, resolve_base_url, validate_arguments, whole_numbers
from ._errors import CallError
from ._ir import ApiSpec, Body, Encoding, Operation, Param
from ._upstream import NO_BODY, UpstreamRequest

__all__ = ["SLASH_PARAMS", "build_request", "style_pairs"]

FORM_URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"

# Path parameters whose values may carry "/" unescaped (file paths, git refs, proxy paths).
SLASH_PARAMS = frozenset({"path", "filepath", "file_path", "ref", "key", "name_path"})
# style -> delimiter for arrays that are not exploded.
DELIMITERS = {"form": ",", "simple": ",", "pipeDelimited": "|", "spaceDelimited": " ", "tabDelimited": "\t"}
_FORBIDDEN_HEADER = frozenset("\r\n\0")
_FORBIDDEN_COOKIE = frozenset("\r\n\0;,")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _bad(op: Operation, param: Param, why: str) -> CallError:
    return CallError(f"api.{op.key}: argument {param.py_name}: {why}", code="call.invalid_argument")


def _joined(param: Param, value: Any, default_style: str) -> str:
    if isinstance(value, list):
        return DELIMITERS.get(param.style or default_style, ",").join(_scalar(v) for v in value)
    if isinstance(value, dict):
        sep = "=" if param.explode else ","
        return ",".join(f"{k}{sep}{_scalar(v)}" for k, v in value.items())
    return _scalar(value)


_SEPARATORS = re.compile(r"[/\\]")


def _dot_segment(segment: str) -> bool:
    """``.``, ``..``, and the forms servers normalise to them (``.. ``, ``...``)."""
    trimmed = segment.rstrip(" ")
    return bool(trimmed) and set(trimmed) == {"."}


def _path_value(op: Operation, param: Param, value: Any) -> str:
    text = _joined(param, value, "simple")
    parts = _SEPARATORS.split(text)
    if any(_dot_segment(part) for part in parts):
        raise _bad(op, param, f"{text!r} contains a '.' or '..' segment, which would leave the operation's path.")
    if param.name.lower() in SLASH_PARAMS:
        if text.startswith(("/", "\\")) or "" in parts:
            raise _bad(op, param, f"{text!r} is not a relative path (empty segments and a leading '/' are refused).")
        return quote(text, safe="/")
    if text == "":
        raise _bad(op, param, "'' is not allowed as a path segment.")
    return quote(text, safe=",") if isinstance(value, list) else quote(text, safe="")


def style_pairs(name: str, value: Any, style: str, explode: bool) -> list[tuple[str, str]]:
    """``(key, text)`` pairs of one query parameter or form field, serialised by ``style``/``explode``.

    ``deepObject`` nests (``meta[a][b]=1``) and indexes arrays (``items[0][price]=p``), the way
    Stripe and most form parsers read it; the other styles follow the OpenAPI tables.
    """
    if style == "deepObject" and isinstance(value, (dict, list)):
        return _deep_pairs(name, value)
    if isinstance(value, list):
        if explode:
            return [(name, _scalar(v)) for v in value]
        return [(name, DELIMITERS.get(style, ",").join(_scalar(v) for v in value))]
    if isinstance(value, dict):
        if explode:
            return [(str(k), _scalar(v)) for k, v in value.items()]
        sep = DELIMITERS.get(style, ",")
        return [(name, sep.join(f"{k}{sep}{_scalar(v)}" for k, v in value.items()))]
    return [(name, _scalar(value))]


def _deep_pairs(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        for k in value:
            if "[" in str(k) or "]" in str(k):
                raise CallError(
                    f"argument {prefix.split('[', 1)[0]}: the key {str(k)!r} contains '[' or ']', which would "
                    "change how the server nests the field.",
                    code="call.invalid_argument",
                )
        return [pair for k, v in value.items() for pair in _deep_pairs(f"{prefix}[{k}]", v)]
    if isinstance(value, list):
        return [pair for i, v in enumerate(value) for pair in _deep_pairs(f"{prefix}[{i}]", v)]
    return [(prefix, _scalar(value))]


def _query_pairs(param: Param, value: Any) -> list[tuple[str, str]]:
    style = param.style or "form"
    explode = param.explode if param.explode is not None else style == "form"
    return style_pairs(param.name, value, style, explode)


def _header_value(op: Operation, param: Param, value: Any, forbidden: frozenset[str]) -> str:
    text = _joined(param, value, "simple")
    if forbidden.intersection(text):
        shown = ", ".join(repr(c) for c in sorted(forbidden.intersection(text)))
        raise _bad(op, param, f"the value contains {shown}, which cannot be sent in a {param.location}.")
    if not text.isascii():
        raise _bad(op, param, f"a {param.location} value must be ASCII text.")
    return text


def _file_part(op: Operation, param: Param | None, value: Any) -> tuple[str, bytes, str]:
    name = param.py_name if param else "body"
    try:
        raw = base64.b64decode(value["content_base64"], validate=True) if "content_base64" in value else (
            str(value["content"]).encode()
        )  # fmt: skip
    except (binascii.Error, ValueError):
        raise CallError(f"api.{op.key}: argument {name}: content_base64 is not valid base64.",
                        code="call.invalid_argument") from None  # fmt: skip
    filename = str(value.get("filename", "upload"))
    content_type = str(value.get("content_type", "application/octet-stream"))
    if _FORBIDDEN_HEADER.intersection(filename + content_type):
        raise CallError(f"api.{op.key}: argument {name}: filename and content_type may not contain line breaks.",
                        code="call.invalid_argument")  # fmt: skip
    return (filename, raw, content_type)


def _with_schemes(security: tuple[tuple[str, ...], ...], schemes: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Security alternatives that also send the credentials of hidden credential parameters.

    Each alternative gains the schemes (used when they are configured); then the schemes alone (the
    parameter is declared, so its credential is sent even when no alternative can be met); then the
    original alternatives, so a missing credential for a hidden parameter never stops the others.
    """
    if not schemes:
        return security
    extended = tuple(tuple(dict.fromkeys((*alt, *schemes))) for alt in (security or ((),)))
    return tuple(dict.fromkeys((*extended, schemes, *security)))


def build_request(
    spec: ApiSpec, op: Operation, bound: Mapping[str, tuple[Param, Any]], *, base_url: str | None
) -> UpstreamRequest:
    bound = {k: (p, whole_numbers(spec, p.schema, v)) for k, (p, v) in bound.items()}
    validate_arguments(spec, op, bound)
    path = op.path
    params: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    cookies: dict[str, str] = {}
    fields: dict[str, tuple[Param, Any]] = {}
    body: Any = NO_BODY
    filled = [(p, p.fill.value) for p in op.params if p.fill is not None and p.fill.value is not None]
    for param, value in [*filled, *bound.values()]:
        loc = param.location
        if param.media_type is not None and loc in ("path", "query", "header", "cookie"):
            value = _encoded(value, param.media_type)  # a `content` parameter: one value in its media type
        if loc == "path":
            path = path.replace("{" + param.name + "}", _path_value(op, param, value))
        elif loc == "query":
            params.extend(_query_pairs(param, value))
        elif loc == "header":
            headers[param.name] = _header_value(op, param, value, _FORBIDDEN_HEADER)
        elif loc == "cookie":
            cookies[param.name] = _header_value(op, param, value, _FORBIDDEN_COOKIE)
        elif op.body is not None and op.body.flattened:
            fields[param.name] = (param, value)
        else:
            body = value
    schemes = tuple(dict.fromkeys(p.fill.scheme for p in op.params if p.fill is not None and p.fill.scheme))
    request = UpstreamRequest(
        operation=op.key, method=op.method.upper(), url=resolve_base_url(spec, op, base_url) + path,
        params=params, headers=headers, cookies=cookies, security=_with_schemes(op.security, schemes),
    )  # fmt: skip
    if op.body is not None and op.body.flattened and op.body.required and not fields and body is NO_BODY:
        empty = op.body.media_type  # a required body with no field given is still sent, empty
        if empty == FORM_URLENCODED:
            return _with_content(request, b"", empty)
        if empty == MULTIPART:
            return _multipart(request, op, {})
        return replace(request, json={}, headers={**headers, "Content-Type": empty or "application/json"})
    if op.body is None or (not fields and body is NO_BODY):
        return request
    media = op.body.media_type
    if op.body.flattened:
        if media == FORM_URLENCODED:
            return _with_content(request, urlencode(_form_pairs(op.body, fields)).encode(), media)
        if media == MULTIPART:
            return _multipart(request, op, fields)
        body = {k: v for k, (_, v) in fields.items()}
    elif media in (FORM_URLENCODED, MULTIPART) and isinstance(body, dict):  # a form body given whole
        loose = {str(k): (Param(str(k), str(k), "form", False, {}), v) for k, v in body.items()}
        if media == MULTIPART:
            return _multipart(request, op, loose)
        return _with_content(request, urlencode(_form_pairs(op.body, loose)).encode(), media)
    if "json" in media or not media:
        return replace(request, json=body, headers={**headers, "Content-Type": media or "application/json"})
    if is_file_value(body):
        content = _file_part(op, None, body)[1]
    else:
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return replace(request, content=content, headers={**headers, "Content-Type": media})


def _with_content(request: UpstreamRequest, content: bytes, content_type: str) -> UpstreamRequest:
    return replace(request, content=content, headers={**request.headers, "Content-Type": content_type})


def _form_pairs(body: Body, fields: Mapping[str, tuple[Param, Any]]) -> list[tuple[str, str]]:
    """``application/x-www-form-urlencoded`` fields, each by its ``encoding`` (default: form, exploded)."""
    pairs: list[tuple[str, str]] = []
    for name, (_, value) in fields.items():
        enc = body.encoding_of(name)
        if enc is not None and enc.style is None and enc.explode is None and enc.content_type:
            pairs.append((name, _encoded(value, enc.content_type)))  # OpenAPI 3.1: the field's own media type
            continue
        style = (enc.style if enc else None) or "form"
        explode = enc.explode if enc is not None and enc.explode is not None else style == "form"
        pairs.extend(style_pairs(name, value, style, explode))
    return pairs


def _encoded(value: Any, content_type: str) -> str:
    if "json" in content_type:
        return json.dumps(value, separators=(",", ":"))
    return _scalar(value)


def _default_part_type(schema: dict[str, Any], value: Any) -> str:
    """OpenAPI's default Content-Type of a multipart field (objects JSON, binaries octets, the rest text)."""
    kind = schema.get("type")
    if schema.get("format") in ("binary", "base64"):
        return "application/octet-stream"
    if kind == "object" or (kind is None and isinstance(value, dict)):
        return "application/json"
    if kind == "array" or (kind is None and isinstance(value, list)):
        items = schema.get("items")
        return "application/json" if isinstance(value, list) and not isinstance(items, dict) else "text/plain"
    return "text/plain"


Part = tuple[str, tuple[str | None, bytes, str, dict[str, str]]]


def _multipart(request: UpstreamRequest, op: Operation, fields: Mapping[str, tuple[Param, Any]]) -> UpstreamRequest:
    """``multipart/form-data``: one part per field (per item for arrays), typed by its ``encoding``."""
    assert op.body is not None
    parts: list[Part] = []
    for name, (param, value) in fields.items():
        enc = op.body.encoding_of(name) or Encoding()
        part_headers = dict(enc.headers)
        if enc.style is not None or enc.explode is not None:
            explode = enc.explode if enc.explode is not None else (enc.style or "form") == "form"
            for key, text in style_pairs(name, value, enc.style or "form", explode):
                parts.append((key, (None, text.encode(), "text/plain", part_headers)))
            continue
        items_schema = param.schema.get("items") if isinstance(param.schema.get("items"), dict) else None
        values = (
            value
            if isinstance(value, list) and (items_schema is not None or param.schema.get("type") == "array")
            else [value]
        )
        for item in values:
            schema = items_schema if values is value and items_schema is not None else param.schema
            if is_file_value(item):
                filename, raw, ctype = _file_part(op, param, item)
                if enc.content_type and "content_type" not in item:
                    ctype = enc.content_type.split(",")[0].strip()
                parts.append((name, (filename, raw, ctype, part_headers)))
                continue
            ctype = (enc.content_type or _default_part_type(schema, item)).split(",")[0].strip()
            if "*" in ctype:
                ctype = _default_part_type(schema, item)
            text = _encoded(item, ctype) if "json" in ctype or isinstance(item, (dict, list)) else _scalar(item)
            parts.append((name, (None, text.encode(), ctype, part_headers)))
    built = httpx.Request("POST", "http://multipart.invalid/", files=parts)
    return _with_content(request, built.read(), built.headers["Content-Type"])
