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
from urllib.parse import quote

from ._client import is_file_value, resolve_base_url, validate_arguments
from ._errors import CallError
from ._ir import ApiSpec, Operation, Param
from ._upstream import NO_BODY, UpstreamRequest

__all__ = ["build_request"]

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


def _query_pairs(param: Param, value: Any) -> list[tuple[str, str]]:
    style = param.style or "form"
    explode = param.explode if param.explode is not None else style == "form"
    if isinstance(value, list):
        if explode:
            return [(param.name, _scalar(v)) for v in value]
        return [(param.name, _joined(param, value, style))]
    if isinstance(value, dict):
        if style == "deepObject":
            return [(f"{param.name}[{k}]", _scalar(v)) for k, v in value.items()]
        if explode:
            return [(str(k), _scalar(v)) for k, v in value.items()]
        return [(param.name, ",".join(f"{k},{_scalar(v)}" for k, v in value.items()))]
    return [(param.name, _scalar(value))]


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


def build_request(
    spec: ApiSpec, op: Operation, bound: Mapping[str, tuple[Param, Any]], *, base_url: str | None
) -> UpstreamRequest:
    validate_arguments(spec, op, bound)
    path = op.path
    params: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    cookies: dict[str, str] = {}
    fields: dict[str, tuple[Param, Any]] = {}
    body: Any = NO_BODY
    for param, value in bound.values():
        loc = param.location
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
    request = UpstreamRequest(
        operation=op.key, method=op.method.upper(), url=resolve_base_url(spec, op, base_url) + path,
        params=params, headers=headers, cookies=cookies, security=op.security,
    )  # fmt: skip
    if op.body is None or (not fields and body is NO_BODY):
        return request
    media = op.body.media_type
    if op.body.flattened:
        if media == "application/x-www-form-urlencoded":
            data = {k: [_scalar(x) for x in v] if isinstance(v, list) else _scalar(v) for k, (_, v) in fields.items()}
            return replace(request, data=data)
        if media == "multipart/form-data":
            files = {k: _file_part(op, p, v) for k, (p, v) in fields.items() if is_file_value(v)}
            data = {
                k: [_scalar(x) for x in v] if isinstance(v, list) else _scalar(v)
                for k, (_, v) in fields.items()
                if k not in files
            }
            return replace(request, data=data, files=files or None)
        body = {k: v for k, (_, v) in fields.items()}
    if "json" in media or not media:
        return replace(request, json=body, headers={**headers, "Content-Type": media or "application/json"})
    if is_file_value(body):
        content = _file_part(op, None, body)[1]
    else:
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return replace(request, content=content, headers={**headers, "Content-Type": media})
