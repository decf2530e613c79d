"""Copying schemas into the IR without inlining them.

Every ``$ref`` met inside a schema is turned into a reference to a *named*
schema in the IR (``#/components/schemas/<Name>``); the named schema is copied
once, later, from a work queue. Cycles therefore cost nothing, and a spec never
grows when loaded.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from ._errors import SpecError
from ._ir import SCHEMA_REF_PREFIX, SpecWarning
from ._loader import DocumentStore
from ._text import plain_text

__all__ = ["JSON_TYPES", "TYPE_ALIASES", "SchemaCollector"]

_MAX_DESCRIPTION = 400
# Keys kept from a schema. Everything else (x-*, xml, externalDocs, examples…) is dropped.
_KEEP = frozenset(
    {
        "type", "format", "enum", "const", "default", "nullable", "readOnly", "writeOnly", "deprecated",
        "title", "description", "example", "items", "properties", "additionalProperties", "required",
        "allOf", "oneOf", "anyOf", "not", "discriminator", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems",
        "minProperties", "maxProperties", "multipleOf", "prefixItems", "patternProperties", "contentMediaType",
    }
)  # fmt: skip
_SCHEMA_MAPS = frozenset({"properties", "patternProperties"})
_SCHEMA_LISTS = frozenset({"allOf", "oneOf", "anyOf", "prefixItems"})
_SCHEMA_ONE = frozenset({"items", "additionalProperties", "not"})
_NAME_CLEAN = re.compile(r"[^0-9A-Za-z_]+")
# JSON Schema's types, and what specs write instead (read as their obvious meaning, with a warning).
JSON_TYPES = frozenset({"string", "integer", "number", "boolean", "array", "object", "null"})
TYPE_ALIASES: dict[str, str] = {
    "int": "integer", "int32": "integer", "int64": "integer", "long": "integer", "float": "number",
    "double": "number", "decimal": "number", "bool": "boolean", "str": "string", "text": "string",
    "date": "string", "datetime": "string", "dict": "object", "map": "object", "list": "array",
}  # fmt: skip


_SCALAR_TYPES = frozenset({"string", "integer", "number", "boolean"})
_COMPOUND = frozenset({"$ref", "properties", "items", "allOf", "oneOf", "anyOf", "not", "additionalProperties"})


def _is_scalar(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") in _SCALAR_TYPES and not _COMPOUND.intersection(node)


def _python_name(raw: str) -> str:
    """Schema names are shown as Python types: ``global-advisory`` -> ``GlobalAdvisory``."""
    if raw.isidentifier() and raw.isascii():
        return raw
    words = [w for w in _NAME_CLEAN.sub(" ", raw.replace("-", " ").replace(".", " ")).split() if w]
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Schema"
    return name if not name[0].isdigit() else f"S{name}"


class SchemaCollector:
    def __init__(self, store: DocumentStore, warnings: list[SpecWarning]) -> None:
        self.store = store
        self.warnings = warnings
        self.schemas: dict[str, dict[str, Any]] = {}
        self._names: dict[tuple[str, str], str] = {}
        self._queue: deque[tuple[str, str, str]] = deque()  # (name, uri, pointer)
        self._dangling: set[str] = set()
        self._original: dict[str, str] = {}  # IR name -> the name in the spec

    def _where(self, uri: str, pointer: str) -> str:
        short = self.store.short(uri)
        return f"{short}#{pointer}" if short else pointer

    def _name_for(self, uri: str, pointer: str) -> str:
        key = (uri, pointer)
        if key in self._names:
            return self._names[key]
        parts = [p for p in pointer.split("/") if p]
        if parts:
            base = parts[-1].replace("~1", "/").replace("~0", "~")
            if base in ("schema", "items") and len(parts) > 1:
                base = "_".join(parts[-3:])
        else:
            base = uri.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        original = base
        base = _python_name(base)
        name, n = base, 1
        while name in self.schemas or name in self._names.values():
            n += 1
            name = f"{base}_{n}"
        self._names[key] = name
        self._original[name] = original
        self.schemas[name] = {}  # placeholder until the queue fills it
        self._queue.append((name, uri, pointer))
        return name

    def ref(self, ref: str, base_uri: str, where: str) -> dict[str, Any]:
        """A reference to the named IR schema for ``ref``; ``{}`` (any) when it dangles.

        A named schema that is only a scalar (``zone_identifier: {type: string, maxLength: 32}``)
        is copied in place instead: ``zone_id: str`` reads better than ``zone_id: ZoneIdentifier``,
        and a scalar cannot take part in a cycle.
        """
        uri, pointer = self.store.split_ref(ref, base_uri)
        try:
            target = self.store.resolve(ref, base_uri)
        except (KeyError, IndexError, ValueError, TypeError, SpecError):
            self._dangle(ref, where)
            return {}
        if _is_scalar(target.node):
            return self.convert(target.node, target.uri, where)
        return {"$ref": SCHEMA_REF_PREFIX + self._name_for(uri, pointer)}

    def _dangle(self, ref: str, where: str) -> None:
        if ref not in self._dangling:
            self._dangling.add(ref)
            self.warnings.append(SpecWarning(where, f"$ref {ref!r} does not resolve; treated as any value"))

    def convert(self, node: Any, base_uri: str, where: str) -> dict[str, Any]:
        """Copy one schema, turning refs into IR refs. Never follows a ref."""
        if not isinstance(node, dict):
            if node is True or node is None:
                return {}
            if node is False:
                return {"not": {}}
            self.warnings.append(SpecWarning(where, f"schema is a {type(node).__name__}, not an object; ignored"))
            return {}
        ref = node.get("$ref")
        if isinstance(ref, str):
            target = self.ref(ref, base_uri, where)
            desc = node.get("description")
            if target and isinstance(desc, str) and desc:  # 3.1 allows siblings next to $ref
                return {"allOf": [target], "description": desc[:_MAX_DESCRIPTION]}
            return target
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key not in _KEEP:
                if key == "x-nullable" and value is True:
                    out["nullable"] = True
                continue
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                if isinstance(value.get("$ref"), str) and len(value) == 1:  # a whole map by reference
                    try:
                        located = self.store.resolve(value["$ref"], base_uri)
                    except (KeyError, IndexError, ValueError, TypeError, SpecError):
                        self._dangle(value["$ref"], f"{where}/{key}")
                        continue
                    value, base_uri = located.node, located.uri
                    if not isinstance(value, dict):
                        continue
                out[key] = {str(k): self.convert(v, base_uri, f"{where}/{key}/{k}") for k, v in value.items()}
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [self.convert(v, base_uri, f"{where}/{key}/{i}") for i, v in enumerate(value)]
            elif key in _SCHEMA_ONE and isinstance(value, (dict, bool)):
                out[key] = self.convert(value, base_uri, f"{where}/{key}") if isinstance(value, dict) else value
            elif key in ("description", "title") and isinstance(value, str):
                out[key] = plain_text(value, _MAX_DESCRIPTION)
            elif key == "discriminator" and isinstance(value, dict):
                out[key] = self._discriminator(value, base_uri, f"{where}/discriminator")
            elif key == "type" and value == "file":  # Swagger 2.0
                out["type"], out["format"] = "string", "binary"
            elif key == "type":
                kind = self._type(value, f"{where}/type")
                if kind is not None:
                    out["type"] = kind
            elif key == "required" and not isinstance(value, list):
                continue  # a boolean ``required`` on a schema is a Swagger-ism; ignore it
            else:
                out[key] = value
        return out

    def _discriminator(self, node: dict[str, Any], base_uri: str, where: str) -> dict[str, Any]:
        """Mapping targets (refs or bare schema names) become IR refs."""
        mapping = node.get("mapping")
        if not isinstance(mapping, dict):
            return dict(node)
        out: dict[str, str] = {}
        for key, target in mapping.items():
            if not isinstance(target, str):
                continue
            is_ref = "#" in target or "/" in target or target.endswith((".json", ".yaml", ".yml"))
            ref = target if is_ref else f"#/components/schemas/{target}"
            converted = self.ref(ref, base_uri, f"{where}/mapping/{key}")
            out[str(key)] = converted.get("$ref", target) if converted else target
        return {**node, "mapping": out}

    def _type(self, value: Any, where: str) -> str | list[str] | None:
        """A valid JSON Schema ``type``; an unknown one is read as its obvious meaning or dropped, with a warning."""
        values = value if isinstance(value, list) else [value]
        out: list[str] = []
        for v in values:
            if isinstance(v, str) and v in JSON_TYPES:
                out.append(v)
                continue
            alias = TYPE_ALIASES.get(v.lower()) if isinstance(v, str) else None
            if alias is not None:
                self.warnings.append(SpecWarning(where, f"unknown type {v!r}; read as {alias!r}"))
                out.append(alias)
            else:
                self.warnings.append(SpecWarning(where, f"unknown type {v!r}; any value is accepted"))
                return None
        if not out:
            return None
        return out if isinstance(value, list) else out[0]

    def _break_bare_cycles(self) -> None:
        """``A: {$ref: B}, B: {$ref: A}`` describes nothing: make such loops 'any value', with a warning."""
        for start in list(self.schemas):
            chain: list[str] = []
            name: str | None = start
            while name is not None and name not in chain:
                chain.append(name)
                ref = self.schemas.get(name, {}).get("$ref")
                name = ref[len(SCHEMA_REF_PREFIX) :] if isinstance(ref, str) and len(self.schemas[name]) == 1 else None
            if name is not None:  # came back to a schema already in the chain: a loop of bare refs
                loop = chain[chain.index(name) :]
                for member in loop:
                    self.schemas[member] = {}
                self.warnings.append(
                    SpecWarning(f"#/components/schemas/{loop[0]}",
                                f"schemas {' -> '.join(loop)} only refer to each other; treated as any value")
                )  # fmt: skip

    def drain(self) -> None:
        """Copy every named schema that was referenced (each once)."""
        self._drain_queue()
        self._break_bare_cycles()
        for schema in self.schemas.values():
            self.complete_discriminators(schema)

    def complete_discriminators(self, node: Any, depth: int = 0) -> None:
        """Give every discriminator a mapping onto IR names: explicit entries, the branches' own names,
        and the values each branch allows for the property (``type: {enum: [function]}``)."""
        if depth > 64:
            return
        if isinstance(node, list):
            for item in node:
                self.complete_discriminators(item, depth + 1)
            return
        if not isinstance(node, dict):
            return
        disc = node.get("discriminator")
        options = node.get("oneOf") or node.get("anyOf") or []
        if isinstance(disc, dict) and any(isinstance(b, dict) and "$ref" not in b for b in options):
            # A discriminator maps values onto named schemas only; beside an inline branch (OpenAI's realtime
            # turn_detection: `{type: {const: server_vad}}`) validators that follow it look that branch's value
            # up as a schema name and refuse every value. The oneOf/anyOf alone decides.
            del node["discriminator"]
            disc = None
        branches = [b for b in options if isinstance(b, dict) and "$ref" in b]
        if isinstance(disc, dict) and isinstance(disc.get("propertyName"), str) and branches:
            mapping = dict(disc.get("mapping") or {})
            prop = disc["propertyName"]
            for branch in branches:
                ref = branch["$ref"]
                name = ref[len(SCHEMA_REF_PREFIX) :]
                original = self._original.get(name, name)
                mapping.setdefault(original, ref)
                for value in self._allowed_values(name, prop):
                    mapping.setdefault(str(value), ref)
            node["discriminator"] = {**disc, "mapping": mapping}
        for key, value in node.items():
            if key != "discriminator" and isinstance(value, (dict, list)):
                self.complete_discriminators(value, depth + 1)

    def _allowed_values(self, name: str, prop: str) -> list[Any]:
        """``enum``/``const`` values the named schema allows for ``prop`` (through refs and allOf)."""
        stack, seen, out = [self.schemas.get(name) or {}], 0, []
        while stack and seen < 32:
            node = stack.pop()
            seen += 1
            if isinstance(node.get("$ref"), str):
                stack.append(self.schemas.get(node["$ref"][len(SCHEMA_REF_PREFIX) :]) or {})
                continue
            sub = (node.get("properties") or {}).get(prop)
            if isinstance(sub, dict):
                if isinstance(sub.get("$ref"), str):
                    sub = self.schemas.get(sub["$ref"][len(SCHEMA_REF_PREFIX) :]) or {}
                if "const" in sub:
                    out.append(sub["const"])
                out += [v for v in sub.get("enum") or [] if isinstance(v, (str, int))]
            stack += [s for s in node.get("allOf") or [] if isinstance(s, dict)]
        return out

    def _drain_queue(self) -> None:
        while self._queue:
            name, uri, pointer = self._queue.popleft()
            where = self._where(uri, pointer)
            located = self.store.resolve(f"{uri}#{pointer}", uri)
            node = located.node
            if isinstance(node, dict) and isinstance(node.get("$ref"), str) and len(node) == 1:
                self.schemas[name] = self.ref(node["$ref"], uri, where)
                continue
            self.schemas[name] = self.convert(node, uri, where)
