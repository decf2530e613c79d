"""Building the IR from the raw documents of a spec (Swagger 2.0 and OpenAPI 3.0–3.2).

Validation is lenient: whatever is wrong but servable becomes a
:class:`~codemode._ir.SpecWarning` naming its JSON pointer; an operation that
cannot be understood is skipped with a warning; only a spec with nothing to
serve is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import _build_top as top
from ._build_top import pointer_escape
from ._errors import SpecError
from ._fills import spec_fill
from ._ir import ApiSpec, Body, Encoding, Operation, Param, Response, SecurityScheme, SpecWarning
from ._loader import DocumentStore
from ._naming import NameRequest, assign_names, param_py_names
from ._schemas import SchemaCollector
from ._text import plain_text, shown_name

__all__ = ["build_spec"]

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace", "query")
# Preferred request media types, best first; anything else falls back to the first one listed.
BODY_MEDIA_PREFERENCE = (
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
)
FORM_MEDIA = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
# Swagger 2.0 parameter keys that describe the value's schema.
SWAGGER_SCHEMA_KEYS = (
    "type", "format", "items", "enum", "default", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems", "multipleOf", "x-nullable",
)  # fmt: skip
# Swagger 2.0 collectionFormat -> OpenAPI 3 (style, explode).
COLLECTION_FORMATS: dict[str, tuple[str, bool]] = {
    "csv": ("form", False), "multi": ("form", True), "pipes": ("pipeDelimited", False),
    "ssv": ("spaceDelimited", False), "tsv": ("tabDelimited", False),
}  # fmt: skip
_JSONISH = re.compile(r"^application/([\w.+-]*\+)?json", re.I)


_NONE = object()


def _param_example(p: dict[str, Any]) -> Any:
    """A parameter's ``example``, or the value of its first ``examples`` entry; ``_NONE`` if it has none."""
    if "example" in p:
        return p["example"]
    examples = p.get("examples")
    if isinstance(examples, dict):
        for entry in examples.values():
            if isinstance(entry, dict) and "value" in entry:
                return entry["value"]
    return _NONE


@dataclass
class _Draft:
    method: str
    path: str
    operation_id: str | None
    summary: str
    description: str
    tags: tuple[str, ...]
    params: list[tuple[str, str, bool, dict[str, Any], str, str | None, bool | None]]  # name, loc, req, schema, desc
    body: Body | None
    body_fields: list[tuple[str, bool, dict[str, Any], str]]  # wire name, required, schema, description
    body_location: str
    responses: tuple[Response, ...]
    security: tuple[tuple[str, ...], ...]
    security_scopes: tuple[tuple[str, ...], ...]
    servers: tuple[str, ...]
    deprecated: bool
    pointer: str


class _Builder:
    def __init__(self, store: DocumentStore, source: str) -> None:
        self.store = store
        self.source = source
        self.root: dict[str, Any] = store.root
        self.uri = store.root_uri
        self.warnings: list[SpecWarning] = []
        self.schemas = SchemaCollector(store, self.warnings)
        is_map = isinstance(self.root, dict)
        self.swagger = is_map and str(self.root.get("swagger", "")).startswith("2")
        self.global_consumes: list[str] = list(self.root.get("consumes") or []) if is_map else []
        self.schemes: dict[str, SecurityScheme] = {}

    def warn(self, pointer: str, message: str) -> None:
        self.warnings.append(SpecWarning(pointer, message))

    def listed(self, node: dict[str, Any], where: str, key: str = "parameters") -> list[Any]:
        """``node[key]`` when it is a list; anything else is one warning and no items (not one per character)."""
        value = node.get(key)
        if value is None or isinstance(value, list):
            return value or []
        self.warn(f"{where}/{key}", f"{key} is a {type(value).__name__}, not a list; ignored")
        return []

    # -- parameters ----------------------------------------------------------------------
    def param_schema(self, p: dict[str, Any], uri: str, where: str) -> dict[str, Any]:
        """The parameter's schema; the parameter's own ``example``/``examples`` become the schema's example."""
        schema = self._param_schema(p, uri, where)
        example = _param_example(p)
        if example is not _NONE and schema and "$ref" not in schema and "example" not in schema:
            schema = {**schema, "example": example}
        return schema

    def _param_schema(self, p: dict[str, Any], uri: str, where: str) -> dict[str, Any]:
        if self.swagger and "schema" not in p:
            raw = {k: p[k] for k in SWAGGER_SCHEMA_KEYS if k in p}
            return self.schemas.convert(raw, uri, where)
        if "schema" in p:
            return self.schemas.convert(p["schema"], uri, f"{where}/schema")
        content = p.get("content")
        if isinstance(content, dict) and content:
            media = next(iter(content.values()))
            if isinstance(media, dict) and "schema" in media:
                return self.schemas.convert(media["schema"], uri, f"{where}/content")
        return {}

    def collect_params(self, nodes: list[tuple[Any, str, str]]) -> list[tuple[dict[str, Any], str, str]]:
        """Resolve ``(node, base uri, pointer)`` parameters; later ones (operation level) override path level."""
        merged: dict[tuple[str, str], tuple[dict[str, Any], str, str]] = {}
        for node, uri, pw in nodes:
            try:
                loc = self.store.deref(node, uri)
            except (KeyError, IndexError, SpecError):
                ref = node.get("$ref") if isinstance(node, dict) else None
                self.warn(pw, f"parameter $ref {ref!r} does not resolve; parameter ignored")
                continue
            p = loc.node
            if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not isinstance(p.get("in"), str):
                self.warn(pw, "parameter has no name or no 'in'; ignored")
                continue
            merged[(p["name"], p["in"])] = (p, loc.uri, pw)
        return list(merged.values())

    # -- bodies --------------------------------------------------------------------------
    @staticmethod
    def pick_media(content: dict[str, Any]) -> str:
        for pref in BODY_MEDIA_PREFERENCE:
            if pref in content:
                return pref
        for media in content:
            if _JSONISH.match(media):
                return media
        return next(iter(content))

    def object_fields(
        self,
        schema: dict[str, Any],
        taken: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> list[tuple[str, bool, dict[str, Any], str]] | None:
        """Top-level fields of an object body (following refs and allOf), or None if not a plain object.

        A readOnly field named like a parameter (``PATCH /items/{id}`` with a readOnly ``id``) is left out.
        """
        props: dict[str, dict[str, Any]] = {}
        required: dict[str, None] = {}  # ordered
        stack, seen = [schema], 0
        while stack:
            s = stack.pop()
            seen += 1
            if seen > 64:
                return None
            hops = 0
            while "$ref" in s:
                hops += 1
                if hops > 32:  # a cycle of bare refs: not a plain object
                    return None
                name = s["$ref"].rsplit("/", 1)[-1]
                s = self.schemas.schemas.get(name) or {}
                if not s and name in self.schemas.schemas:
                    self.schemas.drain()
                    s = self.schemas.schemas.get(name) or {}
            if any(k in s for k in ("oneOf", "anyOf")) or s.get("type") not in (None, "object"):
                return None
            for sub in reversed(s.get("allOf") or []):
                stack.append(sub)
            for k, v in (s.get("properties") or {}).items():
                # a field defined by the body and by one of its allOf parts must satisfy both
                props[k] = {"allOf": [props[k], v]} if k in props and props[k] != v else v
            required.update(dict.fromkeys(r for r in s.get("required") or [] if isinstance(r, str)))
        # required but defined nowhere (DigitalOcean's uptime check `method`): any value, still required
        for k in required:
            if k not in props and k not in taken:
                props[k] = {}
        # readOnly fields are the server's: left out, except a required one (Cloudflare marks the ids that
        # some bodies need readOnly), which stays as an optional field (OpenAPI: required for responses only)
        read_only = {k for k, v in props.items() if self._read_only(v)}
        props = {k: v for k, v in props.items() if k not in read_only or (k in required and k not in taken)}
        if not props:
            return None
        return [
            (k, k in required and k not in read_only, v, plain_text(v.get("description"), 200))
            for k, v in props.items()
        ]

    def _read_only(self, schema: Any) -> bool:
        """``readOnly`` on the schema, on what it refers to, or on one of its allOf members."""
        for _ in range(16):
            if not isinstance(schema, dict):
                return False
            if schema.get("readOnly") is True:
                return True
            parts = [p for p in schema.get("allOf") or [] if isinstance(p, dict)]
            if any(p.get("readOnly") is True for p in parts):
                return True
            ref = schema.get("$ref") or next((p["$ref"] for p in parts if isinstance(p.get("$ref"), str)), None)
            if not isinstance(ref, str):
                return False
            name = ref.rsplit("/", 1)[-1]
            schema = self.schemas.schemas.get(name) or {}
            if not schema and name in self.schemas.schemas:
                self.schemas.drain()
                schema = self.schemas.schemas.get(name) or {}
        return False

    def oas3_body(self, op: dict[str, Any], uri: str, where: str) -> tuple[Body | None, str]:
        node = op.get("requestBody")
        if node is None:
            return None, ""
        try:
            loc = self.store.deref(node, uri)
        except (KeyError, SpecError):
            self.warn(f"{where}/requestBody", "requestBody $ref does not resolve; the body is sent as given")
            return Body("application/json", None, False, False), "body"
        rb = loc.node
        content = rb.get("content") if isinstance(rb, dict) else None
        if not isinstance(content, dict) or not content:
            return Body("application/octet-stream", None, bool(rb.get("required")), False), "body"
        media = self.pick_media(content)
        mnode = content.get(media) or {}
        schema = (
            self.schemas.convert(
                mnode["schema"], loc.uri, f"{where}/requestBody/content/{pointer_escape(media)}/schema"
            )
            if isinstance(mnode, dict) and "schema" in mnode
            else None
        )
        encoding = self.encoding(mnode.get("encoding") if isinstance(mnode, dict) else None, loc.uri,
                                 f"{where}/requestBody/content/{pointer_escape(media)}/encoding")  # fmt: skip
        body = Body(media, schema, bool(rb.get("required")), False, encoding)
        return body, "form" if media in FORM_MEDIA else "body"

    def encoding(self, node: Any, uri: str, where: str) -> tuple[tuple[str, Encoding], ...]:
        """``requestBody.content[*].encoding``: per-field style, explode, content type and part headers."""
        if not isinstance(node, dict):
            return ()
        out: list[tuple[str, Encoding]] = []
        for name, enc in node.items():
            if not isinstance(enc, dict):
                self.warn(f"{where}/{pointer_escape(str(name))}", "encoding entry is not an object; ignored")
                continue
            headers: list[tuple[str, str]] = []
            for hname, hnode in (enc.get("headers") or {}).items():
                try:
                    header = self.store.deref(hnode, uri).node
                except (KeyError, IndexError, SpecError):
                    continue
                hschema = header.get("schema") if isinstance(header, dict) else None
                if isinstance(hschema, dict):
                    enum = hschema.get("enum")
                    value = hschema.get("default", enum[0] if isinstance(enum, list) and len(enum) == 1 else None)
                    if value is not None and str(hname).lower() != "content-type":
                        headers.append((str(hname), str(value)))
            ctype = enc.get("contentType")
            style = enc.get("style")
            explode = enc.get("explode")
            out.append((str(name), Encoding(
                content_type=ctype if isinstance(ctype, str) else None,
                style=style if isinstance(style, str) else None,
                explode=explode if isinstance(explode, bool) else None,
                allow_reserved=enc.get("allowReserved") is True,
                headers=tuple(headers),
            )))  # fmt: skip
        return tuple(out)

    # -- responses -----------------------------------------------------------------------
    def responses(self, node: Any, uri: str, where: str, produces: list[str]) -> tuple[Response, ...]:
        if not isinstance(node, dict):
            return ()
        out: list[Response] = []
        for status, rnode in node.items():
            status = str(status)
            if not (status.startswith("2") or status == "default"):
                continue
            try:
                loc = self.store.deref(rnode, uri)
            except (KeyError, SpecError):
                self.warn(f"{where}/{pointer_escape(status)}", "response $ref does not resolve; ignored")
                continue
            r = loc.node if isinstance(loc.node, dict) else {}
            media: str | None = None
            schema: dict[str, Any] | None = None
            rw = f"{where}/{pointer_escape(status)}"
            if self.swagger:
                if "schema" in r:
                    media = produces[0] if produces else "application/json"
                    schema = self.schemas.convert(r["schema"], loc.uri, f"{rw}/schema")
            elif isinstance(r.get("content"), dict) and r["content"]:
                media = self.pick_media(r["content"])
                mnode = r["content"][media]
                if isinstance(mnode, dict) and "schema" in mnode:
                    schema = self.schemas.convert(
                        mnode["schema"], loc.uri, f"{rw}/content/{pointer_escape(media)}/schema"
                    )
            out.append(Response(status, plain_text(r.get("description"), 300), media, schema))
        return tuple(out)

    # -- operations ----------------------------------------------------------------------
    def draft(
        self, method: str, path: str, op: dict[str, Any], uri: str, where: str, item: dict[str, Any], item_uri: str,
        global_security: tuple[tuple[str, ...], ...], path_servers: tuple[str, ...],
    ) -> _Draft:  # fmt: skip
        path_where = where.rsplit("/", 1)[0]
        nodes = [(n, item_uri, f"{path_where}/parameters/{i}") for i, n in enumerate(self.listed(item, path_where))]
        nodes += [(n, uri, f"{where}/parameters/{i}") for i, n in enumerate(self.listed(op, where))]
        resolved = self.collect_params(nodes)
        params: list[tuple[str, str, bool, dict[str, Any], str, str | None, bool | None]] = []
        body: Body | None = None
        body_location = "body"
        body_fields: list[tuple[str, bool, dict[str, Any], str]] = []
        consumes = list(op.get("consumes") or self.global_consumes)
        form_fields: list[tuple[str, bool, dict[str, Any], str]] = []
        form_encoding: list[tuple[str, Encoding]] = []
        for p, puri, pw in resolved:
            name, loc = p["name"], p["in"]
            schema = self.param_schema(p, puri, pw)
            desc = plain_text(p.get("description"), 200)
            if loc == "body":
                media = self.pick_media(dict.fromkeys(consumes)) if consumes else "application/json"
                body = Body(media, schema, bool(p.get("required")), False)
                continue
            if loc == "formData":
                form_fields.append((name, bool(p.get("required")), schema, desc))
                if p.get("type") == "array":
                    fstyle, fexplode = COLLECTION_FORMATS.get(str(p.get("collectionFormat", "csv")), ("form", False))
                    form_encoding.append((name, Encoding(style=fstyle, explode=fexplode)))
                continue
            if loc not in ("path", "query", "header", "cookie"):
                self.warn(pw, f"parameter location {loc!r} is unknown; parameter ignored")
                continue
            required = True if loc == "path" else bool(p.get("required"))
            style, explode = p.get("style"), p.get("explode")
            content = p.get("content") if "schema" not in p else None
            if isinstance(content, dict) and content:
                style = "content:" + str(next(iter(content)))  # serialised by media type, not by style
            if self.swagger and p.get("type") == "array":
                style, explode = COLLECTION_FORMATS.get(str(p.get("collectionFormat", "csv")), ("form", False))
                style = "simple" if loc in ("path", "header") and style == "form" else style
            params.append((name, loc, required, schema, desc, style, explode))
        if form_fields:
            media = next((m for m in consumes if m in FORM_MEDIA), "application/x-www-form-urlencoded")
            if any(f[2].get("format") == "binary" for f in form_fields):
                media = "multipart/form-data"
            body = Body(media, None, any(f[1] for f in form_fields), True, tuple(form_encoding))
            body_fields, body_location = form_fields, "form"
        if not self.swagger:
            body, body_location = self.oas3_body(op, uri, where)
        if body is not None and body.schema is not None and not body_fields:
            taken = {p[0] for p in params}
            fields = self.object_fields(body.schema, taken)
            if fields is not None and not taken.intersection(f[0] for f in fields) and "body" not in taken:
                body = Body(body.media_type, body.schema, body.required, True, body.encoding)
                body_fields = [(n, r and body.required, s, d) for n, r, s, d in fields]
                body_location = "form" if body.media_type in FORM_MEDIA else "body"
        produces = list(op.get("produces") or self.root.get("produces") or [])
        security = top.security(op.get("security"))
        op_servers = top.servers(op.get("servers"), f"{where}/servers", self.uri, self.warn) or path_servers
        raw_tags = op.get("tags")
        tags: list[Any] = raw_tags if isinstance(raw_tags, list) else []
        return _Draft(
            method=method,
            path=path,
            operation_id=op.get("operationId") if isinstance(op.get("operationId"), str) else None,
            summary=plain_text(op.get("summary"), 300),
            description=plain_text(op.get("description")),
            tags=tuple(shown_name(t) for t in tags),
            params=params,
            body=body,
            body_fields=body_fields,
            body_location=body_location,
            responses=self.responses(op.get("responses"), uri, f"{where}/responses", produces),
            security=security if security is not None else global_security,
            security_scopes=top.security_scopes(
                op.get("security") if security is not None else self.root.get("security")
            )
            or (),
            servers=op_servers,
            deprecated=bool(op.get("deprecated")),
            pointer=where,
        )

    def drafts(self) -> list[_Draft]:
        paths = self.root.get("paths")
        global_security = top.security(self.root.get("security")) or ()
        out: list[_Draft] = []
        if not isinstance(paths, dict):
            return out
        seen_ids: dict[str, str] = {}
        for path, item_node in paths.items():
            pw = f"/paths/{pointer_escape(str(path))}"
            if str(path).startswith("x-"):
                continue
            try:
                item_loc = self.store.deref(item_node, self.uri)
            except (KeyError, IndexError, SpecError) as exc:
                self.warn(pw, f"path item $ref does not resolve ({exc}); path skipped")
                continue
            item = item_loc.node
            if not isinstance(item, dict):
                self.warn(pw, "path item is not an object; path skipped")
                continue
            path_servers = top.servers(item.get("servers"), f"{pw}/servers", self.uri, self.warn)
            ops = [(m, item[m]) for m in METHODS if m in item]
            extra = item.get("additionalOperations")  # OpenAPI 3.2
            if isinstance(extra, dict):
                ops += [(str(m).lower(), v) for m, v in extra.items()]
            for method, op_node in ops:
                ow = f"{pw}/{method}"
                try:
                    op_loc = self.store.deref(op_node, item_loc.uri)
                    if not isinstance(op_loc.node, dict):
                        raise TypeError("the operation is not an object")
                    d = self.draft(
                        method, str(path), op_loc.node, op_loc.uri, ow, item, item_loc.uri, global_security,
                        path_servers,
                    )  # fmt: skip
                except (KeyError, IndexError, TypeError, ValueError, AttributeError, SpecError) as exc:
                    self.warn(ow, f"operation skipped: {type(exc).__name__}: {exc}")
                    continue
                if d.operation_id:
                    if d.operation_id in seen_ids:
                        self.warn(
                            ow,
                            f"operationId {d.operation_id!r} is also used by {seen_ids[d.operation_id]}; "
                            "both are kept under distinct Python names",
                        )
                    else:
                        seen_ids[d.operation_id] = f"{method.upper()} {path}"
                out.append(d)
        return out

    def build(self) -> ApiSpec:
        if not isinstance(self.root, dict):
            raise SpecError(
                f"{self.source} is not an OpenAPI document: its top level is a {type(self.root).__name__}, "
                "not an object.",
                code="spec.not_openapi",
                where=self.source,
            )
        version = str(self.root.get("openapi") or self.root.get("swagger") or "")
        if not version:
            if "paths" not in self.root:
                raise SpecError(
                    f"{self.source} is not an OpenAPI or Swagger document: it has no 'openapi', 'swagger' "
                    "or 'paths' key at the top level.",
                    code="spec.not_openapi",
                    where=self.source,
                )
            self.warn("/", "no 'openapi' or 'swagger' version key; read as OpenAPI 3.0")
            version = "3.0.0"
        elif not re.match(r"^(2\.0|3\.[0-2])", version):
            self.warn("/openapi", f"version {version!r} is not one this reader knows (2.0, 3.0–3.2); read as 3.x")
        self.schemes = top.security_schemes(self.store, self.swagger, self.warn)
        drafts = self.drafts()
        raw_hooks = self.root.get("webhooks")
        webhooks: dict[str, Any] = raw_hooks if isinstance(raw_hooks, dict) else {}
        n_webhooks = sum(1 for v in webhooks.values() if isinstance(v, dict))
        if not drafts:
            if not isinstance(self.root.get("paths"), dict) and not webhooks:
                raise SpecError(
                    f"{self.source} has no operations: there is no 'paths' object"
                    + (" (and no webhooks)." if not self.swagger else "."),
                    code="spec.no_operations",
                    where=self.source,
                )
            self.warn("/paths", f"no callable operations (webhooks: {n_webhooks}); search and execute will be empty")
        names = assign_names(NameRequest(d.method, d.path, d.operation_id, d.tags) for d in drafts)
        operations = tuple(self.finish(d, g, n) for d, (g, n) in zip(drafts, names, strict=True))
        self.schemas.drain()
        for op in operations:  # inline schemas too (the named ones were done by drain)
            for node in [*(p.schema for p in op.params), *(r.schema for r in op.responses)]:
                self.schemas.complete_discriminators(node)
            if op.body is not None:
                self.schemas.complete_discriminators(op.body.schema)
        raw_info = self.root.get("info")
        info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
        servers = (
            top.swagger_servers(self.root)
            if self.swagger
            else top.servers(self.root.get("servers"), "/servers", self.uri, self.warn)
        )
        return ApiSpec(
            title=plain_text(info.get("title"), 200) or "API",
            version=str(info.get("version", "")),
            spec_version=version,
            description=plain_text(info.get("description"), 1000),
            servers=servers,
            operations=operations,
            schemas=self.schemas.schemas,
            security_schemes=self.schemes,
            warnings=tuple(self.warnings),
            source=self.source,
            content_hash=self.store.content_hash(),
            webhooks=n_webhooks,
            tag_descriptions=self.tag_descriptions(),
        )

    def tag_descriptions(self) -> dict[str, str]:
        """The top-level ``tags`` list as name -> description (search shows them when browsing)."""
        raw = self.root.get("tags")
        out: dict[str, str] = {}
        for tag in raw if isinstance(raw, list) else []:
            if isinstance(tag, dict) and isinstance(tag.get("name"), str):
                out[shown_name(tag["name"])] = plain_text(tag.get("description"), 500)
        return out

    def finish(self, d: _Draft, group: str, name: str) -> Operation:
        wire = [(p[0], p[1]) for p in d.params] + [(f[0], d.body_location) for f in d.body_fields]
        if d.body is not None and not d.body.flattened:
            wire.append(("body", "body"))
        py = param_py_names(wire)
        success = next((r for r in d.responses if r.status.startswith("2")), None)
        medias = {"body_media": d.body.media_type if d.body else None,
                  "response_media": success.media_type if success else None}  # fmt: skip
        params: list[Param] = []
        for (pname, loc, req, schema, desc, style, explode), pyn in zip(d.params, py, strict=False):
            fill = spec_fill(pname, loc, req, schema, self.schemes, **medias)
            media = style[len("content:") :] if isinstance(style, str) and style.startswith("content:") else None
            style = None if media is not None else style
            params.append(Param(pname, pyn, loc, req, schema, desc, style, explode, fill, media))  # type: ignore[arg-type]
        rest = py[len(d.params) :]
        for (fname, req, schema, desc), pyn in zip(d.body_fields, rest, strict=False):
            fill = spec_fill(fname, d.body_location, req, schema, self.schemes, **medias)
            params.append(Param(fname, pyn, d.body_location, req, schema, desc, fill=fill))  # type: ignore[arg-type]
        if d.body is not None and not d.body.flattened:
            params.append(Param("body", rest[-1], "body", d.body.required, d.body.schema or {}, "request body"))
        return Operation(
            key=f"{group}.{name}",
            group=group,
            name=name,
            method=d.method,
            path=d.path,
            operation_id=d.operation_id,
            summary=d.summary,
            description=d.description,
            tags=d.tags,
            params=tuple(params),
            body=d.body,
            responses=d.responses,
            security=d.security,
            security_scopes=d.security_scopes,
            servers=d.servers,
            deprecated=d.deprecated,
            pointer=d.pointer,
        )


def build_spec(store: DocumentStore, source: str) -> ApiSpec:
    return _Builder(store, source).build()
