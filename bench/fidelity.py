"""Fidelity: does codemode send every request the way the spec says, and do its stand-ins match the spec?

For every operation of every corpus spec (``../shared/specs``), arguments are generated from the
IR (the spec's examples first, else schema-shaped values with every optional field), the call is
made through the real execute path (policy check, wasm isolate, guest client, bridge, request
builder, httpx) against a recorder on 127.0.0.1, and the recorded request is validated:

* OpenAPI 3.0/3.1: with openapi-core's request validator against the *original* spec document
  (an independent implementation of the same rules);
* Swagger 2.0 (openapi-core does not read it): with :func:`check_swagger`, a small independent
  check against the spec's own parameter definitions;

and each dry-run stand-in response is validated with openapi-core's response validator.

    .venv/bin/python bench/fidelity.py                 # every operation of every spec
    .venv/bin/python bench/fidelity.py --sample 40     # at most 40 operations per spec
    .venv/bin/python bench/fidelity.py --spec stripe   # specs whose file name contains "stripe"
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import re
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codemode import load_spec

# openapi-core's own notices (a security scheme it does not model, a oneOf it cannot pick) are not
# findings: what it cannot check is counted and named in the report instead.
warnings.filterwarnings("ignore", message="Unsupported scheme type", category=UserWarning)
logging.getLogger("openapi_core").setLevel(logging.ERROR)
from codemode._client import _is_read_only, resolve_base_url
from codemode._credentials import Credentials, env_var_name
from codemode._execute import Executor
from codemode._ir import ApiSpec, Operation, Param
from codemode._loader import DocumentStore, parse_document
from codemode._render import FORMAT_MAP
from codemode._request import SLASH_PARAMS
from codemode._sandbox import LocalSandbox, Sandbox, WasmSandbox
from codemode._settings import ExecuteSettings
from codemode._standin import stand_in
from codemode._upstream import HttpxUpstream, UpstreamSettings

SHARED = ROOT.parent / "shared" / "specs"
SECRET = "fidelity-credential-0123"
JSONISH = re.compile(r"^application/([\w.+-]*\+)?json", re.I)
assert FORMAT_MAP["binary"] == "File"  # files are passed as {"filename", "content_base64"}


# -- the loopback recorder ------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    target: str  # path and query as sent
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(self.target).query, keep_blank_values=True)

    @property
    def content_type(self) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == "content-type"), "")


class _Handler(BaseHTTPRequestHandler):
    recorded: list[Recorded]
    protocol_version = "HTTP/1.1"

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.recorded.append(  # type: ignore[attr-defined]
            Recorded(self.command, self.path, {k: v for k, v in self.headers.items()}, body)
        )
        payload = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_TRACE = do_QUERY = _any

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def recorder() -> Iterator[tuple[str, list[Recorded]]]:
    """A real HTTP server on 127.0.0.1 that records every request and answers ``200 {}``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.recorded = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.recorded  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


# -- arguments ------------------------------------------------------------------------------------


def _is_file(param: Param) -> bool:
    schema = param.schema
    items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
    return schema.get("format") == "binary" or bool(items and items.get("format") == "binary")


def arguments(spec: ApiSpec, op: Operation) -> dict[str, Any]:
    """A value for every parameter the model passes, optional ones included."""
    args: dict[str, Any] = {}
    file_value = {"filename": "f.bin", "content_base64": "aGk=", "content_type": "application/octet-stream"}
    json_body = op.body is not None and bool(JSONISH.match(op.body.media_type))
    for param in op.visible_params:
        if param.location in ("body", "form") and not param.required and _is_read_only(spec, param.schema):
            continue  # a readOnly field the model may pass (some APIs need it); a spec-true request leaves it out
        if _is_file(param) and not (json_body and param.location == "body"):
            args[param.py_name] = [file_value] if param.schema.get("type") == "array" else file_value
            continue
        if param.location == "body" and not param.schema and op.body is not None and not op.body.flattened:
            args[param.py_name] = file_value if not JSONISH.match(op.body.media_type) else {}
            continue
        value = stand_in(spec, param.schema, request=True) if param.schema else "x"
        if value is None and param.location in ("path", "query", "header", "cookie"):
            value = "x"
        args[param.py_name] = value
    return args


# -- validating -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    spec: str
    op: str
    label: str
    request: str | None = None  # None: valid; else the cause
    stand_in: str | None = None  # None: valid (or not applicable); else the cause
    checked_stand_in: bool = False
    limit: str | None = None  # the request failed on a construct the validator itself cannot handle
    stand_in_limit: str | None = None


REGISTRY_BROKEN = (
    "a $ref to a document that is not a schema object (DigitalOcean refers to text and example files): "
    "openapi-core's reference registry raises AttributeError, and stays broken until rebuilt"
)


# Constructs openapi-core cannot check, recognised from the operation *and* the failure (both must hold).
def openapi_core_limit(spec: ApiSpec, op: Operation, cause: str) -> str | None:
    media = op.body.media_type if op.body is not None else ""
    params = op.visible_params
    if "#" in op.path:
        return "operations told apart by a #fragment of the path (never sent): openapi-core matches another twin"
    if spec.dialect == "oas31" and media == "multipart/form-data" and "b'" in cause and "of type 'string'" in cause:
        return "binary parts of OpenAPI 3.1 multipart bodies: openapi-core reads bytes, its 3.1 schema wants str"
    if "cast value to object type" in cause and any(
        p.location == "query"
        and isinstance(p.schema.get("items"), dict)
        and (p.schema["items"].get("type") == "object" or "$ref" in p.schema["items"])
        for p in params
    ):
        return "arrays of objects in a query parameter (OpenAPI defines no serialisation for them)"
    if (
        media
        and not JSONISH.match(media)
        and not media.startswith(("multipart/", "application/x-www-form"))
        and (re.search(r"b'[^']*' is not of type 'string'", cause))
    ):
        return "bodies in a media type openapi-core has no reader for (application/javascript…): left as bytes"
    if media == "multipart/form-data" and re.search(r"'[^']*' is not of type '(boolean|integer|number)'", cause):
        return "typed fields of multipart bodies: openapi-core validates the text of each part without casting it"
    if media == "multipart/form-data" and op.body is not None and not op.body.flattened and "of type any" in cause:
        return "multipart bodies whose schema is a oneOf/anyOf: openapi-core decodes no property"
    if spec.dialect == "oas30" and "is a required property" in cause and _required_read_only(spec, op, cause):
        return (
            "required readOnly body properties (OpenAPI 3.0 exempts requests; openapi-core requires and refuses them)"
        )
    if "Tried to write read-only property" in cause and op.body is not None:
        return READ_ONLY_VALUES
    if "Invalid path parameter" in cause and any(
        p.location == "path" and _any_read_only(spec, p.schema, 0) for p in params
    ):
        return READ_ONLY_VALUES
    if "is not valid under any of the given schemas" in cause and op.body is not None and _branches_need_read_only(
        spec, op.body.schema, 0, set()
    ):
        return (
            "required readOnly properties in every branch of a oneOf (Cloudflare's worker bindings and token "
            "policies): openapi-core requires and refuses them, and reports only 'not valid under any'"
        )
    if "Invalid query parameter" in cause and " is not one of [" in cause and any(
        p.location == "query" and _typeless_enum(p.schema) for p in params
    ):
        return (
            "query enums of numbers or booleans with no `type` (Cloudflare's ssl: [0, 1], retry: [true]): "
            "a query string is text, and openapi-core casts it only by `type`"
        )
    if "could not be resolved" in cause and "#/components/schemas/" in cause and _partial_mapping(spec, op):
        return (
            "discriminator mappings that list only some of the values their branches allow (DigitalOcean's "
            "droplet actions by tag: `reboot`): the rest resolve to no schema; codemode maps them by the enums"
        )
    if "ServerNotFound" in cause and any(urlsplit(u).hostname is None for u in op.servers):
        return (
            "operations whose server has no host (DigitalOcean's presigned upload: `https://` + `/<upload_url>`, "
            "a URL an earlier answer gives): not callable as described"
        )
    if "InvalidData" in cause and _contradictory(spec, op):
        return "response schemas whose allOf members admit disjoint types (for the body or one property): no value can"
    if "is valid under each of" in cause:
        return "oneOf branches that accept the same values (Cloudflare's IPv4 and CIDR strings): no value is valid"
    if "Path not found" in cause and any(p.location == "path" and p.name.lower() in SLASH_PARAMS for p in params):
        return "path parameters that carry '/' (git refs, file paths), sent unescaped on purpose, as these APIs expect"
    if op.servers and "is a required property" in cause:
        return "operation-level servers: openapi-core validates against another operation's body"
    return None


READ_ONLY_VALUES = (
    "values a request needs under readOnly schemas (Cloudflare's identifiers, DigitalOcean's ssh_key_identifier): "
    "the spec contradicts itself"
)


def _any_read_only(spec: ApiSpec, schema: Any, depth: int) -> bool:
    """readOnly on the schema, what it refers to, or any of its allOf/anyOf/oneOf members."""
    schema = _deref(spec, schema)
    if not isinstance(schema, dict) or depth > 8:
        return False
    if schema.get("readOnly") is True:
        return True
    return any(
        _any_read_only(spec, m, depth + 1) for key in ("allOf", "anyOf", "oneOf") for m in schema.get(key) or []
    )


def _branches_need_read_only(spec: ApiSpec, schema: Any, depth: int, seen: set[str]) -> bool:
    """Somewhere in the body, a oneOf/anyOf each of whose branches requires a readOnly property."""
    if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return False
        seen.add(name)
    schema = _deref(spec, schema)
    if not isinstance(schema, dict) or depth > 12:
        return False
    for key in ("oneOf", "anyOf"):
        branches = [b for b in schema.get(key) or [] if isinstance(b, dict)]
        if branches and all(_requires_read_only(spec, b) for b in branches):
            return True
    subs = [*(schema.get("properties") or {}).values(), schema.get("items"), schema.get("additionalProperties")]
    subs += [*(schema.get("allOf") or []), *(schema.get("oneOf") or []), *(schema.get("anyOf") or [])]
    return any(_branches_need_read_only(spec, sub, depth + 1, seen) for sub in subs if isinstance(sub, dict))


def _requires_read_only(spec: ApiSpec, branch: Any) -> bool:
    members = _all_of_members(spec, branch, 0)
    props: dict[str, Any] = {}
    for member in members:
        props.update(member.get("properties") or {})
    required = {r for member in members for r in member.get("required") or [] if isinstance(r, str)}
    return any(name in props and _is_read_only(spec, props[name]) for name in required)


def _overlapping_response(spec: ApiSpec, op: Operation, body: bytes) -> str | None:
    """The stand-in fails a response oneOf only because several of its branches accept it."""
    from openapi_schema_validator import OAS30Validator, OAS31Validator

    resp = op.success_response()
    if resp is None or resp.schema is None:
        return None
    cls = OAS31Validator if spec.dialect == "oas31" else OAS30Validator
    validator = cls({**resp.schema, "components": {"schemas": spec.schemas}})
    errors = list(validator.iter_errors(json.loads(body)))
    if errors and all(e.validator == "oneOf" and "is valid under each of" in e.message for e in errors):
        return (
            "response oneOfs whose branches overlap (Cloudflare's memberships with and without policies): "
            "a full answer matches several branches"
        )
    return None


def _typeless_enum(schema: dict[str, Any]) -> bool:
    enum = schema.get("enum")
    return "type" not in schema and isinstance(enum, list) and any(not isinstance(v, str) for v in enum)


def _partial_mapping(spec: ApiSpec, op: Operation) -> bool:
    """The body's discriminator has an explicit mapping that leaves out values its branches allow."""
    schema = _deref(spec, op.body.schema if op.body is not None else None)
    disc = schema.get("discriminator") if isinstance(schema, dict) else None
    return isinstance(disc, dict) and bool(disc.get("mapping"))


_READ_ONLY_NAMES: dict[str, set[str]] = {}


def _required_read_only(spec: ApiSpec, op: Operation, cause: str) -> bool:
    """The missing required property is one the spec marks readOnly (by name, anywhere in its schemas)."""
    match = re.search(r"'([^']+)' is a required property", cause)
    if match is None or op.body is None:
        return False
    names = _READ_ONLY_NAMES.get(spec.source)
    if names is None:
        names = set()
        for schema in spec.schemas.values():
            for name, prop in (schema.get("properties") or {}).items():
                if _is_read_only(spec, prop):
                    names.add(name)
        _READ_ONLY_NAMES[spec.source] = names
    return match.group(1) in names


def _contradictory(spec: ApiSpec, op: Operation) -> bool:
    """The success response's allOf admits no value: its members, or the definitions they give one top-level
    property, allow disjoint JSON types (Cloudflare's `result`: an object or string in the common envelope, an
    array, an integer or only null in the operation's own part; an object envelope and a string enum)."""
    resp = op.success_response()
    if resp is None or resp.schema is None:
        return False
    members = _all_of_members(spec, resp.schema, 0)
    if _disjoint([_json_types(spec, m, 0) for m in members]):
        return True
    by_name: dict[str, list[set[str] | None]] = {}
    for member in members:
        for name, prop in (member.get("properties") or {}).items():
            by_name.setdefault(name, []).append(_json_types(spec, prop, 0))
    return any(_disjoint(kinds) for kinds in by_name.values())


def _deref(spec: ApiSpec, node: Any) -> Any:
    for _ in range(16):
        if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
            break
        node = spec.schemas.get(node["$ref"].rsplit("/", 1)[-1])
    return node


def _all_of_members(spec: ApiSpec, node: Any, depth: int) -> list[dict[str, Any]]:
    """The schema and its allOf members, nested allOf flattened, refs followed."""
    node = _deref(spec, node)
    if not isinstance(node, dict) or depth > 16:
        return []
    out = [node]
    for part in node.get("allOf") or []:
        out += _all_of_members(spec, part, depth + 1)
    return out


def _json_types(spec: ApiSpec, node: Any, depth: int) -> set[str] | None:
    """The JSON types a schema admits (integer counts as number), or None when it does not say."""
    node = _deref(spec, node)
    if not isinstance(node, dict) or depth > 16:
        return None
    enum = node.get("enum")
    if isinstance(enum, list) and enum and all(v is None for v in enum):
        return {"null"}
    found: set[str] | None = None
    kind = node.get("type")
    if isinstance(kind, (str, list)):
        found = {"number" if k == "integer" else k for k in ([kind] if isinstance(kind, str) else kind)}
        if node.get("nullable") is True:
            found.add("null")
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list) and options:
            kinds = [_json_types(spec, o, depth + 1) for o in options]
            if all(k is not None for k in kinds):
                union = set().union(*kinds)  # type: ignore[misc]
                found = union if found is None else found & union
    for part in node.get("allOf") or []:
        kinds_of = _json_types(spec, part, depth + 1)
        if kinds_of is not None:
            found = kinds_of if found is None else found & kinds_of
    return found


def _disjoint(kinds: list[set[str] | None]) -> bool:
    known = [k for k in kinds if k is not None]
    return len(known) > 1 and not set.intersection(*known)


@dataclass
class SpecReport:
    name: str
    version: str
    validator: str  # "openapi-core", "swagger-check" or why neither could run
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def requests_ok(self) -> int:
        return sum(o.request is None for o in self.outcomes)

    @property
    def limited(self) -> int:
        """Operations whose check hit a construct the validator cannot handle (left out of the share)."""
        return sum(o.limit is not None for o in self.outcomes)

    @property
    def share(self) -> float | None:
        judged = len(self.outcomes) - self.limited
        return 100 * self.requests_ok / judged if judged else None

    @property
    def stand_ins_limited(self) -> int:
        return sum(o.stand_in_limit is not None for o in self.outcomes)

    @property
    def stand_ins(self) -> int:
        return sum(o.checked_stand_in for o in self.outcomes)

    @property
    def stand_ins_ok(self) -> int:
        return sum(o.checked_stand_in and o.stand_in is None for o in self.outcomes)

    def causes(self, which: str = "request") -> Counter[str]:
        limit = "limit" if which == "request" else "stand_in_limit"
        return Counter(
            _normalise(getattr(o, which))
            for o in self.outcomes
            if getattr(o, which) is not None and getattr(o, limit) is None
        )

    def limits(self, which: str = "limit") -> Counter[str]:
        return Counter(getattr(o, which) for o in self.outcomes if getattr(o, which) is not None)


def _normalise(cause: str) -> str:
    """Causes grouped: long values shortened, numbers folded."""
    cause = re.sub(r"(Value|value) .{40,}? (not valid|is not)", r"\1 … \2", cause)
    cause = re.sub(r"'([^']{24})[^']{8,}'", r"'\1…'", cause)
    cause = re.sub(r"\b\d+\b", "N", cause)
    return cause[:220]


def _cause(exc: BaseException) -> str:
    """openapi-core's exception, and the schema error under it when there is one."""
    parts = [f"{type(exc).__name__}: {exc}"]
    inner: BaseException | None = exc.__cause__
    while inner is not None and len(parts) < 4:
        schema_errors = getattr(inner, "schema_errors", None)
        if schema_errors:
            first = schema_errors[0]
            where = "/".join(str(p) for p in getattr(first, "absolute_path", []))
            parts.append(f"{getattr(first, 'message', first)} at /{where}")
            break
        parts.append(f"{type(inner).__name__}: {inner}")
        inner = inner.__cause__
    return " <- ".join(p[:300] for p in parts)


# What openapi-core cannot handle on its own, and how it is told (each is counted in the report):
# - media types it has no deserializer for (`application/json-patch+json`, `application/merge-patch+json`…):
#   every `…+json` type is given json.loads;
# - a parameter whose schema is `readOnly` (Cloudflare marks its identifier schemas so): openapi-core refuses
#   every value of it, so those parameters are checked with `readOnly` removed from their own schema.
ADJUSTMENTS: Counter[str] = Counter()


def _json_media_types(node: Any, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "content" and isinstance(value, dict):
                out.update(k for k in value if isinstance(k, str) and "+json" in k)
            _json_media_types(value, out)
    elif isinstance(node, list):
        for value in node:
            _json_media_types(value, out)
    return out


def _unlock_read_only_params(data: dict[str, Any]) -> int:
    """Copy `readOnly` out of the schemas parameters use (in this document); returns how many changed."""
    schemas = (data.get("components") or {}).get("schemas") or {}
    changed = 0

    def fix(param: Any) -> None:
        nonlocal changed
        if not isinstance(param, dict) or "schema" not in param:
            return
        unlocked = _without_read_only(param["schema"], schemas, 0)
        if unlocked is not None:
            param["schema"] = unlocked
            changed += 1

    for param in ((data.get("components") or {}).get("parameters") or {}).values():
        fix(param)
    for item in (data.get("paths") or {}).values():
        if not isinstance(item, dict):
            continue
        for param in item.get("parameters") or []:
            fix(param)
        for op in item.values():
            if isinstance(op, dict):
                for param in op.get("parameters") or []:
                    fix(param)
    return changed


def _without_read_only(schema: Any, schemas: dict[str, Any], depth: int) -> dict[str, Any] | None:
    """A copy of a parameter's schema (refs followed, allOf members too) without readOnly; None if it had none."""
    if not isinstance(schema, dict) or depth > 6:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        return _without_read_only(schemas.get(ref.rsplit("/", 1)[-1], {}), schemas, depth + 1)
    copy = {k: v for k, v in schema.items() if k != "readOnly"}
    changed = "readOnly" in schema
    for key in ("allOf", "anyOf", "oneOf"):
        members = schema.get(key)
        if isinstance(members, list):
            new = [_without_read_only(m, schemas, depth + 1) for m in members]
            if any(n is not None for n in new):
                copy[key] = [n if n is not None else m for n, m in zip(new, members, strict=True)]
                changed = True
    return copy if changed else None


def _complete_mappings(data: dict[str, Any]) -> int:
    """Discriminators without a mapping whose values are not schema names (OpenAI: `type: function`):
    map each value a branch allows for the property onto that branch. Returns how many were completed."""
    schemas = (data.get("components") or {}).get("schemas") or {}
    done = 0

    def allowed(ref: str, prop: str) -> list[str]:
        node = schemas.get(ref.rsplit("/", 1)[-1], {})
        out: list[str] = []
        for part in [node, *(node.get("allOf") or [])]:
            if isinstance(part, dict) and "$ref" in part:
                part = schemas.get(part["$ref"].rsplit("/", 1)[-1], {})
            sub = (part.get("properties") or {}).get(prop) if isinstance(part, dict) else None
            if isinstance(sub, dict):
                out += [str(v) for v in sub.get("enum") or [] if isinstance(v, str)]
                out += [sub["const"]] if isinstance(sub.get("const"), str) else []
        return out

    def walk(node: Any) -> None:
        nonlocal done
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        disc = node.get("discriminator")
        branches = [
            b["$ref"] for b in node.get("oneOf") or node.get("anyOf") or [] if isinstance(b, dict) and "$ref" in b
        ]
        if isinstance(disc, dict) and isinstance(disc.get("propertyName"), str) and branches:
            mapping = dict(disc.get("mapping") or {})
            before = len(mapping)
            for ref in branches:
                for value in allowed(ref, disc["propertyName"]):
                    if value not in mapping and value not in schemas:
                        mapping[value] = ref
            if len(mapping) > before:
                disc["mapping"] = mapping
                done += 1
        for value in node.values():
            walk(value)

    walk(data)
    return done


def _drop_inline_discriminators(data: dict[str, Any]) -> int:
    """Discriminators over inline branches (OpenAI's realtime turn_detection): a discriminator can only name
    schemas, so validators that follow it refuse every value; the oneOf/anyOf alone decides (as in the IR)."""
    dropped = 0

    def walk(node: Any) -> None:
        nonlocal dropped
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        options = node.get("oneOf") or node.get("anyOf") or []
        if isinstance(node.get("discriminator"), dict) and any(
            isinstance(b, dict) and "$ref" not in b for b in options
        ):
            del node["discriminator"]
            dropped += 1
        for value in node.values():
            walk(value)

    walk(data)
    return dropped


def _openapi_core(path: Path) -> Any:
    from jsonschema_path import SchemaPath
    from openapi_core import Config, OpenAPI
    from openapi_core.deserializing.media_types.util import json_loads

    data = parse_document(path.read_bytes(), str(path))
    mapped = _complete_mappings(data)
    if mapped:
        ADJUSTMENTS[f"{path.name}: {mapped} discriminators given the mapping their branches' enums imply"] += 1
    inline = _drop_inline_discriminators(data)
    if inline:
        ADJUSTMENTS[f"{path.name}: {inline} discriminators over inline branches removed (they can name none)"] += 1
    unlocked = _unlock_read_only_params(data)
    if unlocked:
        ADJUSTMENTS[f"{path.name}: readOnly removed from {unlocked} parameter schemas"] += 1
    extra = dict.fromkeys(sorted(_json_media_types(data, set())), json_loads)
    if extra:
        ADJUSTMENTS[f"{path.name}: json.loads for {', '.join(extra)}"] += 1
    config = Config(spec_validator_cls=None, extra_media_type_deserializers=extra)
    return OpenAPI(SchemaPath.from_dict(data, base_uri=path.resolve().as_uri()), config=config)


def _mock_request(host_url: str, rec: Recorded) -> Any:
    from openapi_core.testing import MockRequest
    from werkzeug.datastructures import ImmutableMultiDict

    cookies = dict(
        pair.strip().split("=", 1) for pair in rec.headers.get("Cookie", "").split(";") if "=" in pair
    )  # fmt: skip
    headers = {k: v for k, v in rec.headers.items() if k.lower() not in ("cookie",)}
    # openapi-core does not decode path parameters; decode every escape but %2F, which would split a segment
    path = unquote(re.sub("%2[Ff]", "%252F", rec.path))
    request = MockRequest(
        host_url, rec.method, path, headers=headers, cookies=cookies, data=rec.body,
        content_type=rec.content_type or "application/json",
    )  # fmt: skip
    request.parameters.query = ImmutableMultiDict(rec.query)
    return request


def _host_url(spec: ApiSpec, op: Operation) -> tuple[str, str]:
    """``(scheme://host, server path)`` of the server the operation is sent to."""
    try:
        url = resolve_base_url(spec, op, None)
    except Exception:  # noqa: BLE001 - no absolute server: openapi-core matches relative servers on any host
        servers = op.servers or spec.servers
        url = "http://localhost" + (servers[0] if servers and servers[0].startswith("/") else "")
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")


def _stand_in_response(spec: ApiSpec, op: Operation) -> tuple[int, str, bytes] | None:
    resp = op.success_response()
    if resp is None or resp.schema is None or not resp.media_type or not JSONISH.match(resp.media_type):
        return None
    status = int(resp.status) if resp.status.isdigit() else 200
    body = json.dumps(stand_in(spec, resp.schema)).encode()
    return status, resp.media_type, body


# -- Swagger 2.0: an independent check ----------------------------------------------------------------


def check_swagger(store: DocumentStore, op: Operation, rec: Recorded, server_path: str) -> str | None:
    """The recorded request against the Swagger 2.0 operation's own parameters; ``None`` when it conforms.

    ``store`` only reads the spec's files and follows ``$ref``s to parameters; the checks are this function's.
    """
    from jsonschema import Draft4Validator

    raw = store.root
    item_loc = store.deref(raw["paths"][op.path], store.root_uri)
    item = item_loc.node
    node = store.deref(item[op.method], item_loc.uri).node
    params: dict[tuple[str, str], dict[str, Any]] = {}
    for p in [*(item.get("parameters") or []), *(node.get("parameters") or [])]:
        p = store.deref(p, item_loc.uri).node
        params[(p["name"], p["in"])] = p
    # the path: every template variable filled, the literal segments as in the spec
    path = unquote(rec.path)
    if server_path and path.startswith(server_path):
        path = path[len(server_path) :]
    pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "([^/]+)" if "{path}" not in op.path else "(.+)", re.escape(op.path)) + "$"
    if not re.match(pattern, path):
        return f"path {path!r} does not match {op.path!r}"
    query = rec.query
    query_names = {k for k, _ in query}
    form: list[tuple[str, str]] = []
    ctype = rec.content_type.split(";")[0].strip()
    if ctype == "application/x-www-form-urlencoded":
        form = parse_qsl(rec.body.decode(), keep_blank_values=True)
    elif ctype == "multipart/form-data":
        message = BytesParser().parsebytes(f"Content-Type: {rec.content_type}\r\n\r\n".encode() + rec.body)
        form = [(str(p.get_param("name", header="content-disposition")), "") for p in message.get_payload()]
    for (name, loc), p in params.items():
        if p.get("required") or loc == "path":
            present = {
                "path": True, "query": name in query_names, "formData": any(k == name for k, _ in form),
                "header": any(k.lower() == name.lower() for k in rec.headers), "body": bool(rec.body),
            }.get(loc, True)  # fmt: skip
            if not present:
                return f"required {loc} parameter {name!r} is missing"
        if loc == "query" and name in query_names:
            values = [v for k, v in query if k == name]
            problem = _swagger_value(p, values)
            if problem:
                return f"query {name!r}: {problem}"
        if loc == "formData" and ctype == "application/x-www-form-urlencoded" and any(k == name for k, _ in form):
            problem = _swagger_value(p, [v for k, v in form if k == name])
            if problem:
                return f"formData {name!r}: {problem}"
        if loc == "body" and rec.body and "schema" in p:
            try:
                value = json.loads(rec.body)
            except ValueError:
                continue
            schema = {**p["schema"], "definitions": raw.get("definitions", {})}
            try:
                errors = sorted(Draft4Validator(schema).iter_errors(value), key=lambda e: list(e.path))
            except Exception:  # noqa: BLE001 - external refs this small check does not follow
                continue
            if errors:
                return f"body: {errors[0].message[:200]} at /{'/'.join(map(str, errors[0].absolute_path))}"
    declared = {name for (name, loc) in params if loc == "query"}
    unknown = query_names - declared
    if unknown:
        return f"undeclared query parameters {sorted(unknown)}"
    return None


def _swagger_value(p: dict[str, Any], values: list[str]) -> str | None:
    kind = p.get("type")
    if kind == "array":
        fmt = p.get("collectionFormat", "csv")
        if fmt != "multi" and len(values) > 1:
            return f"collectionFormat {fmt} sends one value, got {len(values)}"
        sep = {"csv": ",", "ssv": " ", "tsv": "\t", "pipes": "|"}.get(fmt)
        items = [x for v in values for x in (v.split(sep) if sep else [v])]
        return next((f"item {x!r}: {e}" for x in items if (e := _swagger_scalar(p.get("items") or {}, x))), None)
    if len(values) > 1:
        return f"{len(values)} values for a single value"
    return _swagger_scalar(p, values[0])


def _swagger_scalar(p: dict[str, Any], text: str) -> str | None:
    kind = p.get("type")
    try:
        if kind == "integer":
            int(text)
        elif kind == "number":
            float(text)
    except ValueError:
        return f"{text!r} is not a {kind}"
    if kind == "boolean" and text not in ("true", "false"):
        return f"{text!r} is not a boolean"
    enum = p.get("enum")
    allowed = [str(e).lower() if isinstance(e, bool) else str(e) for e in enum] if isinstance(enum, list) else []
    if allowed and text not in allowed:
        return f"{text!r} is not one of {enum[:5]}"
    return None


# -- running ---------------------------------------------------------------------------------------


def corpus(name_filter: str = "") -> list[tuple[str, Path, str]]:
    """``(file, path, spec version)`` of every corpus spec with operations."""
    entries = json.loads((SHARED / "index.json").read_text())
    return [
        (e["file"], SHARED / e["file"], str(e["version"])) for e in entries if e["ops"] and name_filter in e["file"]
    ]


def _sample(ops: tuple[Operation, ...], limit: int | None) -> list[Operation]:
    if limit is None or len(ops) <= limit:
        return list(ops)
    step = len(ops) / limit
    return [ops[int(i * step)] for i in range(limit)]


async def check_spec(
    file: str, path: Path, version: str, *, sample: int | None, sandbox: Sandbox, base: str, recorded: list[Recorded]
) -> SpecReport:
    started = time.perf_counter()
    spec = load_spec(str(path))
    version = spec.spec_version
    if version.startswith("2"):
        validator, app, raw = "swagger-check", None, DocumentStore.open(str(path))
    elif version.startswith(("3.0", "3.1")):
        validator, app, raw = "openapi-core", _openapi_core(path), None
    else:
        validator, app, raw = f"none (openapi-core does not read OpenAPI {version})", None, None
    report = SpecReport(file, version, validator)
    env = {env_var_name(name): SECRET for name in spec.security_schemes}
    env.update({f"{env_var_name(n)}_USERNAME": "user" for n in spec.security_schemes})
    env.update({f"{env_var_name(n)}_PASSWORD": SECRET for n in spec.security_schemes})
    credentials = Credentials.from_env(spec.security_schemes, env)
    executors: dict[str, Executor] = {}
    upstream = HttpxUpstream(UpstreamSettings(max_retries=0), credentials=credentials)
    try:
        for op in _sample(spec.operations, sample):
            host_url, server_path = _host_url(spec, op)
            loop_base = base + server_path
            ex = executors.get(loop_base)
            if ex is None:
                ex = Executor(spec, sandbox, upstream, ExecuteSettings(check_responses=False), base_url=loop_base)
                executors[loop_base] = ex
            outcome = Outcome(file, op.key, op.label)
            report.outcomes.append(outcome)
            recorded.clear()
            # base64: the arguments reach the guest as data, never as source text the policy check reads
            packed = base64.b64encode(json.dumps(arguments(spec, op)).encode()).decode()
            code = f"import base64, json\nresult = api.{op.key}(**json.loads(base64.b64decode({packed!r})))"
            run = await ex.execute(code)
            if not recorded:
                error = run.outcome.error if run.outcome is not None else None
                why = f"{error.type}: {error.message[:200]}" if error else str(run.rejected)
                outcome.request = f"not sent: {why}"
                continue
            rec = recorded[-1]
            if app is not None:
                try:
                    app.validate_request(_mock_request(host_url, rec))
                except Exception as exc:  # noqa: BLE001 - every openapi-core failure is a finding to report
                    outcome.request = _cause(exc)
                    outcome.limit = openapi_core_limit(spec, op, outcome.request)
                    if isinstance(exc, AttributeError):  # its reference registry is broken from now on: start afresh
                        outcome.limit = REGISTRY_BROKEN
                        app = _openapi_core(path)
            elif raw is not None:
                outcome.request = check_swagger(raw, op, rec, server_path)
            else:
                outcome.request = None
            answer = _stand_in_response(spec, op)
            if app is not None and answer is not None:
                from openapi_core.testing import MockResponse

                status, media, body = answer
                outcome.checked_stand_in = True
                try:
                    app.validate_response(
                        _mock_request(host_url, rec), MockResponse(body, status_code=status, content_type=media)
                    )
                except Exception as exc:  # noqa: BLE001
                    outcome.stand_in = _cause(exc)
                    outcome.stand_in_limit = openapi_core_limit(spec, op, outcome.stand_in) or _overlapping_response(
                        spec, op, body
                    )
                    if isinstance(exc, AttributeError):
                        outcome.stand_in_limit = REGISTRY_BROKEN
                        app = _openapi_core(path)
    finally:
        await upstream.aclose()
    report.seconds = time.perf_counter() - started
    return report


async def run_all(name_filter: str = "", sample: int | None = None, *, wasm: bool = True) -> list[SpecReport]:
    sandbox: Sandbox = WasmSandbox() if wasm else LocalSandbox()
    reports = []
    with recorder() as (base, recorded):
        for file, path, version in corpus(name_filter):
            reports.append(
                await check_spec(file, path, version, sample=sample, sandbox=sandbox, base=base, recorded=recorded)
            )
    return reports


def table(reports: list[SpecReport]) -> str:
    lines = [
        "| spec | version | checked by | operations | requests valid | validator limits | share valid | "
        "stand-ins valid | s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        n = len(r.outcomes)
        share = f"{r.share:.1f}%" if r.share is not None else "-"
        judged = r.stand_ins - r.stand_ins_limited
        si = f"{r.stand_ins_ok}/{judged} ({100 * r.stand_ins_ok / judged:.1f}%)" if judged else "-"
        lines.append(
            f"| {r.name} | {r.version} | {r.validator} | {n} | {r.requests_ok} | {r.limited} | {share} | {si} | "
            f"{r.seconds:.0f} |"
        )
    return "\n".join(lines)


def causes(reports: list[SpecReport], which: str = "request", limit: int = 6) -> str:
    out: list[str] = []
    for r in reports:
        counted = r.causes(which)
        if counted:
            out.append(f"{r.name} ({sum(counted.values())}):")
            out += [f"  {n} × {cause}" for cause, n in counted.most_common(limit)]
    return "\n".join(out)


def limits(reports: list[SpecReport]) -> str:
    counted: Counter[str] = Counter()
    where: dict[str, set[str]] = {}
    for r in reports:
        for which in ("limit", "stand_in_limit"):
            for cause, n in r.limits(which).items():
                counted[cause] += n
                where.setdefault(cause, set()).add(r.name)
    return "\n".join(f"  {n} × {cause} ({', '.join(sorted(where[cause]))})" for cause, n in counted.most_common())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, help="at most this many operations per spec")
    parser.add_argument("--spec", default="", help="only specs whose file name contains this")
    parser.add_argument("--local", action="store_true", help="the in-process sandbox instead of the wasm isolate")
    parser.add_argument("--show", default="", help="print the full cause of operations whose key contains this")
    args = parser.parse_args()
    reports = asyncio.run(run_all(args.spec, args.sample, wasm=not args.local))
    print(table(reports))
    for r in reports:
        for o in r.outcomes:
            if args.show and args.show in o.op and (o.request or o.stand_in):
                print(f"\n{o.spec} {o.op} {o.label}\n  request: {o.request}\n  stand-in: {o.stand_in}")
    print("\nrequests that did not validate, by cause:\n" + (causes(reports) or "  none"))
    print("\nstand-ins that did not validate, by cause:\n" + (causes(reports, "stand_in") or "  none"))
    print(
        "\nchecks left out: constructs openapi-core cannot handle (requests and stand-ins):\n"
        + (limits(reports) or "  none")
    )
    told = "\n".join(f"  {a}" for a in ADJUSTMENTS) or "  none"
    print("\nwhat openapi-core was told, to read these specs:\n" + told)
    return 0


if __name__ == "__main__":
    sys.exit(main())
