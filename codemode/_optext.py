"""Text that keyword search indexes for an operation beyond its names: request-body properties and enum values."""

from __future__ import annotations

from typing import Any

from ._ir import SCHEMA_REF_PREFIX, ApiSpec, Operation

__all__ = ["BODY_PROPERTIES", "ENUM_VALUES", "body_text", "values_text"]

BODY_PROPERTIES = 40  # request-body properties indexed per operation
ENUM_VALUES = 30  # enum values indexed per parameter or property


def _schema_at(spec: ApiSpec, node: Any, depth: int = 0) -> dict[str, Any]:
    """Follow ``$ref`` and merge ``allOf`` members, a few levels deep: the properties a body has."""
    if not isinstance(node, dict) or depth > 4:
        return {}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(SCHEMA_REF_PREFIX):
        return _schema_at(spec, spec.schemas.get(ref[len(SCHEMA_REF_PREFIX) :]), depth + 1)
    members = node.get("allOf")
    if isinstance(members, list):
        merged: dict[str, Any] = {"properties": dict(node.get("properties") or {})}
        for m in members:
            merged["properties"].update(_schema_at(spec, m, depth + 1).get("properties") or {})
        return merged
    return node


def _enum_values(spec: ApiSpec, schema: Any, out: list[str]) -> None:
    node = _schema_at(spec, schema)
    for candidate in (node, _schema_at(spec, node.get("items"))):
        values = candidate.get("enum")
        if isinstance(values, list):
            out.extend(v for v in values[:ENUM_VALUES] if isinstance(v, str))


def values_text(spec: ApiSpec, op: Operation) -> str:
    """Enum values of parameters and body properties: what the API calls things ("TXT", "always_use_https")."""
    out: list[str] = []
    for p in op.params:
        if p.name != "body":
            _enum_values(spec, p.schema, out)
    if op.body is not None and op.body.schema:
        body = _schema_at(spec, op.body.schema)
        variants = [body] + [_schema_at(spec, v) for v in (body.get("oneOf") or body.get("anyOf") or [])[:20]]
        for variant in variants:
            props = variant.get("properties")
            if isinstance(props, dict):
                for prop in list(props.values())[:BODY_PROPERTIES]:
                    _enum_values(spec, prop, out)
    return " ".join(dict.fromkeys(v.replace("_", " ") for v in out))


def body_text(spec: ApiSpec, op: Operation) -> str:
    """Request-body property names and the start of their descriptions (indexed at a low weight)."""
    words: list[str] = []
    for p in op.params:
        if p.location in ("body", "form") and p.name != "body" and p.description:
            words.append(p.description[:120])
    if op.body is not None and not op.body.flattened and op.body.schema:
        props = _schema_at(spec, op.body.schema).get("properties")
        if isinstance(props, dict):
            for name, prop in list(props.items())[:BODY_PROPERTIES]:
                words.append(str(name).replace("_", " "))
                desc = prop.get("description") if isinstance(prop, dict) else None
                if isinstance(desc, str):
                    words.append(desc[:120])
    return " ".join(words)
