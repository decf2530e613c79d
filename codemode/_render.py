"""Rendering the IR as compact, typed Python: signatures, types and TypedDict-style schemas."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from ._ir import SCHEMA_REF_PREFIX, ApiSpec, Operation, Param

__all__ = ["describe_operation", "py_literal", "render_schema", "signature", "type_text"]

# JSON Schema type -> Python type; format overrides. Policy as data.
TYPE_MAP: dict[str, str] = {
    "string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None",
    "array": "list", "object": "dict",
}  # fmt: skip
FORMAT_MAP: dict[str, str] = {"binary": "File"}  # File = {"filename", "content" | "content_base64", ...}
MAX_LITERALS = 8
MAX_UNION = 4
LOCATION_ORDER = {"path": 0, "query": 1, "body": 2, "form": 2, "header": 3, "cookie": 4}


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(SCHEMA_REF_PREFIX):
        return ref[len(SCHEMA_REF_PREFIX) :]
    return None


def py_literal(value: Any) -> str:
    """A JSON value written as Python source: ``True``, ``None``, ``'a'``, ``{'k': 1}``."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    return repr(value)


def _literal(values: list[Any]) -> str:
    # Literal[...] only takes str/int/bool/None/bytes/enum members: anything else is shown as its repr anyway.
    shown = ", ".join(py_literal(v) for v in values[:MAX_LITERALS])
    more = ", ..." if len(values) > MAX_LITERALS else ""  # more values: `...` keeps the text valid Python
    return f"Literal[{shown}{more}]"


def type_text(schema: dict[str, Any] | None, depth: int = 0) -> str:
    """One-line Python type for a schema. Refs are named, never expanded."""
    if not schema:
        return "Any"
    name = _ref_name(schema)
    if name is not None:
        return shown_key(name)
    nullable = bool(schema.get("nullable"))
    if "const" in schema:
        text = _literal([schema["const"]])
    elif isinstance(schema.get("enum"), list) and schema["enum"]:
        values = [v for v in schema["enum"] if v is not None]
        nullable = nullable or len(values) < len(schema["enum"])
        text = _literal(values) if values else "None"
    elif any(k in schema for k in ("oneOf", "anyOf")):
        options = schema.get("oneOf") or schema.get("anyOf") or []
        parts: list[str] = []
        for sub in options:
            t = type_text(sub, depth + 1) if isinstance(sub, dict) else "Any"
            if t == "None":
                nullable = True
            elif t not in parts:
                parts.append(t)
        text = " | ".join(parts[:MAX_UNION]) + (" | ..." if len(parts) > MAX_UNION else "") if parts else "Any"
    elif isinstance(schema.get("allOf"), list) and schema["allOf"]:
        subs = [s for s in schema["allOf"] if isinstance(s, dict)]
        named = [type_text(s, depth + 1) for s in subs if _ref_name(s)]
        if len(subs) == 1:
            text = type_text(subs[0], depth + 1)
        elif named and len(named) == len(subs):
            text = " & ".join(named)
        elif named:
            text = named[0]
        else:
            text = _object_text(_merge_all_of(subs), depth)
    else:
        kind = schema.get("type")
        kinds = [k for k in kind if k != "null"] if isinstance(kind, list) else [kind] if kind else []
        if isinstance(kind, list) and "null" in kind:
            nullable = True
        texts: list[str] = []
        for k in kinds or (["object"] if "properties" in schema else ["array"] if "items" in schema else []):
            if k == "array":
                items = schema.get("items")
                texts.append(f"list[{type_text(items, depth + 1) if isinstance(items, dict) else 'Any'}]")
            elif k == "object" or (k is None and "properties" in schema):
                texts.append(_object_text(schema, depth))
            else:
                fmt = schema.get("format")
                texts.append(
                    FORMAT_MAP.get(fmt, TYPE_MAP.get(str(k), "Any"))
                    if isinstance(fmt, str)
                    else TYPE_MAP.get(str(k), "Any")
                )
        text = " | ".join(texts) if texts else "Any"
    return f"{text} | None" if nullable and not text.endswith("None") else text


def _merge_all_of(subs: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    for sub in subs:
        merged["properties"].update(sub.get("properties") or {})
        merged["required"] += [r for r in sub.get("required") or [] if isinstance(r, str)]
    return merged


def shown_key(key: str) -> str:
    """A property or schema name as written, unless it holds a line break or an invisible control
    (a bidirectional override, a NUL): then as a quoted literal, so it cannot reshape the answer."""
    return key if key.isprintable() else repr(key)


def _object_text(schema: dict[str, Any], depth: int) -> str:
    props = schema.get("properties")
    addl = schema.get("additionalProperties")
    if isinstance(props, dict) and props:
        if depth >= 1:
            return "dict"
        req = set(schema.get("required") or [])
        items = list(props.items())
        shown = ", ".join(f"{shown_key(k)}{'' if k in req else '?'}: {type_text(v, depth + 1)}" for k, v in items[:6])
        more = ", …" if len(items) > 6 else ""
        return "{" + shown + more + "}"
    if isinstance(addl, dict) and addl:
        return f"dict[str, {type_text(addl, depth + 1)}]"
    return "dict"


MAX_DEFAULT_CHARS = 40


def _default_text(value: Any) -> str:
    """The default as Python source; a long one is shown as ``...`` (its value is in the detail view)."""
    text = py_literal(value)
    return text if len(text) <= MAX_DEFAULT_CHARS else "..."


def _param_text(p: Param) -> str:
    t = type_text(p.schema)
    if p.required:
        return f"{p.py_name}: {t}"
    default = p.schema.get("default") if isinstance(p.schema, dict) else None
    if default is not None:
        return f"{p.py_name}: {t} = {_default_text(default)}"
    return f"{p.py_name}: {t} | None = None" if not t.endswith("None") else f"{p.py_name}: {t} = None"


def ordered_params(op: Operation) -> tuple[list[Param], list[Param]]:
    """``(positional path params, keyword params required-first)``; parameters the host fills are left out."""
    visible = op.visible_params
    path = [p for p in visible if p.location == "path"]
    order = {"{" + p.name + "}": op.path.find("{" + p.name + "}") for p in path}
    path.sort(key=lambda p: order.get("{" + p.name + "}", 0))
    rest = [p for p in visible if p.location != "path"]
    rest.sort(key=lambda p: (not p.required, LOCATION_ORDER.get(p.location, 9)))
    return path, rest


def return_text(op: Operation) -> str:
    resp = op.success_response()
    if resp is None or resp.status == "204":
        return "None"
    if resp.schema is None and resp.media_type is None:
        return "Any"
    if resp.schema is None:
        return "str" if resp.media_type and resp.media_type.startswith("text/") else "Any"
    return type_text(resp.schema)


def signature(op: Operation, *, max_optional: int | None = 6) -> str:
    """``api.group.name(a: str, *, b: int | None = None, …) -> T``."""
    path, rest = ordered_params(op)
    parts = [_param_text(p) for p in path]
    kw = [p for p in rest if p.required] + [p for p in rest if not p.required]
    optional = [p for p in kw if not p.required]
    shown = kw if max_optional is None else [p for p in kw if p.required] + optional[:max_optional]
    if shown:
        parts.append("*")
        parts.extend(_param_text(p) for p in shown)
    hidden = len(kw) - len(shown)
    if hidden:
        parts.append(f"…{hidden} more optional")
    return f"api.{op.key}({', '.join(parts)}) -> {return_text(op)}"


def render_schema(spec: ApiSpec, name: str) -> str:
    """A named schema as TypedDict-style text."""
    schema = spec.schemas.get(name)
    if schema is None:
        return f"# no schema named {name!r}"
    seen = {name}
    while (inner := _ref_name(schema)) is not None and inner in spec.schemas and inner not in seen:
        seen.add(inner)
        schema = spec.schemas[inner]
    return _render_named(name, schema)


def _render_named(name: str, schema: dict[str, Any]) -> str:
    lines: list[str] = []
    desc = schema.get("description")
    props: dict[str, Any] = {}
    required: set[str] = set()
    bases: list[str] = []
    for sub in [schema, *[s for s in schema.get("allOf") or [] if isinstance(s, dict)]]:
        if (ref := _ref_name(sub)) is not None and sub is not schema:
            bases.append(shown_key(ref))
            continue
        props.update(sub.get("properties") or {})
        required.update(r for r in sub.get("required") or [] if isinstance(r, str))
    if not props and not bases:
        lines.append(f"{shown_key(name)} = {type_text({k: v for k, v in schema.items() if k != 'description'})}")
        if isinstance(desc, str) and desc:
            lines.append(f"  # {_one_line(desc)}")
        return "\n".join(lines)
    head = f"class {shown_key(name)}({', '.join(bases) or 'TypedDict'}):"
    lines.append(head + (f"  # {_one_line(desc)}" if isinstance(desc, str) and desc else ""))
    for prop, sub in props.items():
        t = type_text(sub if isinstance(sub, dict) else {})
        t = t if prop in required else f"NotRequired[{t}]"
        note = sub.get("description") if isinstance(sub, dict) else None
        flags = [f for f in ("readOnly", "writeOnly", "deprecated") if isinstance(sub, dict) and sub.get(f)]
        comment = ", ".join(flags + ([_one_line(note, 90)] if isinstance(note, str) and note else []))
        lines.append(f"    {shown_key(prop)}: {t}" + (f"  # {comment}" if comment else ""))
    if not props:
        lines.append("    ...")
    return "\n".join(lines)


def _is_credential(p: Param) -> bool:
    return p.fill is not None and p.fill.source == "credential"


def _one_line(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def referenced_names(schema: Any) -> list[str]:
    out: list[str] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name = _ref_name(node)
            if name is not None and name not in out:
                out.append(name)
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return out


def describe_operation(spec: ApiSpec, op: Operation, *, budget_chars: int = 8000) -> str:
    """The detail view of one operation: full signature, parameters, body and result types."""
    lines = [op.label, signature(op, max_optional=None)]
    if op.summary:
        lines.append(f"  {_one_line(op.summary, 200)}")
    if op.description and op.description != op.summary:
        lines.append(f"  {_one_line(op.description, 600)}")
    if op.deprecated:
        lines.append("  DEPRECATED")
    path, rest = ordered_params(op)
    if path or rest:
        lines.append("Parameters:")
        for p in [*path, *rest]:
            wire = "" if p.py_name == p.name else f" (sent as {p.name!r})"
            req = "required" if p.required else "optional"
            doc = f" — {_one_line(p.description, 160)}" if p.description else ""
            lines.append(f"  {p.py_name}: {type_text(p.schema)}  [{p.location}, {req}]{wire}{doc}")
    filled = [p for p in op.params if p.fill is not None]
    if filled:
        shown = ", ".join(f"{p.name} [{p.location}{', credential' if _is_credential(p) else ''}]" for p in filled)
        lines.append(f"Filled in by the server (do not pass): {shown}")
    if op.body is not None:
        shape = "fields above" if op.body.flattened else "the `body` argument"
        lines.append(f"Request body: {op.body.media_type}, from {shape}")
    resp = op.success_response()
    if resp is not None:
        lines.append(f"Returns: HTTP {resp.status} {resp.media_type or ''} -> {return_text(op)}".rstrip())
    if op.security:
        alts = " or ".join(" + ".join(a) or "none" for a in op.security)
        lines.append(f"Auth: {alts} (injected by the server; never pass credentials)")
    lines.append(f"Operation id: {op.operation_id or '(none)'}; scopes: {', '.join(op.scopes)}")
    text = "\n".join(lines)
    # Then the named schemas it uses, breadth first, until the budget is spent.
    seeds: list[Any] = [p.schema for p in op.params]
    if resp is not None:
        seeds.append(resp.schema)
    queue: deque[str] = deque(n for s in seeds for n in referenced_names(s))
    seen: set[str] = set()
    blocks: list[str] = []
    used = len(text)
    skipped: list[str] = []
    while queue:
        name = queue.popleft()
        if name in seen or name not in spec.schemas:
            continue
        seen.add(name)
        block = render_schema(spec, name)
        if used + len(block) + 2 > budget_chars:
            skipped.append(name)
            continue
        blocks.append(block)
        used += len(block) + 2
        queue.extend(referenced_names(spec.schemas[name]))
    if blocks:
        text += "\n\n" + "\n\n".join(blocks)
    if skipped:
        text += f"\n\n# not shown (budget): {', '.join(skipped[:20])}{' …' if len(skipped) > 20 else ''}"
        text += "\n# see one with search(detail='schema:<Name>')"
    return text
