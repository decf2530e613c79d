"""Schema-shaped stand-in values for dry runs.

A stand-in has every property of its schema (required or not) down to :data:`MAX_DEPTH`, prefers
the spec's own ``example``/``default``/``const``/``enum`` values, respects the usual constraints
(lengths, bounds, formats, item counts) and, for ``oneOf``/``anyOf``, picks the first branch whose
value the schema accepts. A budget of :data:`MAX_VALUES` values keeps huge schemas small: past it,
only required properties are filled.
"""

from __future__ import annotations

import re
from typing import Any

from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator, OAS31Validator

from ._ir import SCHEMA_REF_PREFIX, ApiSpec

__all__ = ["MAX_DEPTH", "MAX_VALUES", "stand_in"]

MAX_DEPTH = 8
MAX_VALUES = 1500
MAX_PROPERTIES = 60
# Sample strings by format; checked against `pattern` before use.
FORMAT_SAMPLES: dict[str, str] = {
    "date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01", "time": "12:00:00Z",
    "uuid": "00000000-0000-4000-8000-000000000000", "email": "user@example.com",
    "uri": "https://example.com/", "url": "https://example.com/", "uri-reference": "https://example.com/",
    "hostname": "example.com", "ipv4": "192.0.2.1", "ipv6": "2001:db8::1", "byte": "c3RyaW5n",
    "binary": "string", "password": "string", "duration": "P1D", "int64": "0", "int32": "0",
}  # fmt: skip
# Strings tried, in order, when a pattern refuses the first choice.
PATTERN_CANDIDATES = ("string", "a", "A", "0", "1", "abc", "ABC", "a1", "A1", "abc123", "ab-12", "x_y", "a.b", "2026")


class _Maker:
    def __init__(self, spec: ApiSpec) -> None:
        self.spec = spec
        self.budget = MAX_VALUES
        cls = OAS31Validator if spec.dialect == "oas31" else OAS30Validator
        self._cls = cls
        self._components = {"schemas": spec.schemas}

    def accepts(self, schema: dict[str, Any], value: Any) -> bool:
        try:
            return not any(True for _ in self._cls({**schema, "components": self._components}).iter_errors(value))
        except (ValidationError, RecursionError, TypeError, ValueError):  # an odd schema: do not judge
            return True

    def resolve(self, schema: dict[str, Any], seen: tuple[str, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
        hops = 0
        while isinstance(schema.get("$ref"), str) and schema["$ref"].startswith(SCHEMA_REF_PREFIX) and hops < 16:
            name = schema["$ref"][len(SCHEMA_REF_PREFIX) :]
            seen = (*seen, name)
            schema = self.spec.schemas.get(name) or {}
            hops += 1
        return schema, seen

    def make(self, schema: Any, depth: int = 0, seen: tuple[str, ...] = ()) -> Any:
        if not isinstance(schema, dict) or not schema:
            return "string"
        schema, seen = self.resolve(schema, seen)
        self.budget -= 1
        if "const" in schema:
            return schema["const"]
        for key in ("example", "default"):
            if key in schema and schema[key] is not None and self._fits(schema, schema[key]):
                return schema[key]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return next((v for v in enum if v is not None), enum[0])
        for key in ("oneOf", "anyOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return self.choose(schema, options, depth, seen)
        if isinstance(schema.get("allOf"), list) and schema["allOf"]:
            return self.all_of(schema, depth, seen)
        kind = self.kind(schema)
        if kind == "object":
            return self.object(schema, depth, seen)
        if kind == "array":
            return self.array(schema, depth, seen)
        if kind in ("integer", "number"):
            return self.number(schema, kind)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        if kind == "string":
            return self.string(schema)
        return "string"

    @staticmethod
    def kind(schema: dict[str, Any]) -> str | None:
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            if "properties" in schema or "additionalProperties" in schema:
                return "object"
            if "items" in schema:
                return "array"
        return kind if isinstance(kind, str) else None

    def _fits(self, schema: dict[str, Any], value: Any) -> bool:
        """An example is used only if its schema accepts it (specs carry stale examples)."""
        return self.accepts(schema, value)

    def choose(self, schema: dict[str, Any], options: list[Any], depth: int, seen: tuple[str, ...]) -> Any:
        rest = {k: v for k, v in schema.items() if k not in ("oneOf", "anyOf")}
        first: Any = None
        for i, option in enumerate(options):
            if not isinstance(option, dict):
                continue
            merged = {**rest, **option} if rest and "$ref" not in option else option
            if rest and "$ref" in option:
                merged = {**rest, "allOf": [option]}
            value = self.make(merged, depth + 1, seen)
            if i == 0:
                first = value
            if value is not None and self.accepts(schema, value):
                return value
        return first

    def all_of(self, schema: dict[str, Any], depth: int, seen: tuple[str, ...]) -> Any:
        subs = [s for s in schema["allOf"] if isinstance(s, dict)]
        own = {k: v for k, v in schema.items() if k != "allOf"}
        merged: dict[str, Any] = {}
        scalar: Any = None
        for sub in [*subs, *([own] if own.get("properties") or own.get("type") else [])]:
            value = self.make(sub, depth + 1, seen)
            if isinstance(value, dict):
                merged.update(value)
            elif scalar is None:
                scalar = value
        if merged or scalar is None:
            return merged
        return scalar

    def object(self, schema: dict[str, Any], depth: int, seen: tuple[str, ...]) -> dict[str, Any]:
        props = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        out: dict[str, Any] = {}
        full = depth < MAX_DEPTH and self.budget > 0
        for name, sub in list(props.items())[:MAX_PROPERTIES]:
            if not (full or name in required):
                continue
            if isinstance(sub, dict) and sub.get("writeOnly"):
                continue
            if name not in required and self._loops(sub, seen) and not self._is_array(sub):
                continue  # an optional property that leads back to an enclosing schema: stop here
            out[name] = self.make(sub, depth + 1, seen)
        for name in required - set(out):
            if name not in props:
                addl = schema.get("additionalProperties")
                out[name] = self.make(addl, depth + 1, seen) if isinstance(addl, dict) else "string"
        min_props = schema.get("minProperties")
        addl = schema.get("additionalProperties")
        if isinstance(min_props, int) and len(out) < min_props:
            for i in range(min_props - len(out)):
                out[f"key{i}"] = self.make(addl, depth + 1, seen) if isinstance(addl, dict) else "string"
        return out

    @staticmethod
    def _is_array(schema: Any) -> bool:
        return isinstance(schema, dict) and schema.get("type") == "array"

    def _loops(self, schema: Any, seen: tuple[str, ...]) -> bool:
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if isinstance(schema, dict) and schema.get("type") == "array" and isinstance(schema.get("items"), dict):
            ref = schema["items"].get("$ref")
        return isinstance(ref, str) and ref[len(SCHEMA_REF_PREFIX) :] in seen

    def array(self, schema: dict[str, Any], depth: int, seen: tuple[str, ...]) -> list[Any]:
        items = schema.get("items")
        raw_min = schema.get("minItems")
        min_items = raw_min if isinstance(raw_min, int) else 0
        if depth >= MAX_DEPTH or self.budget <= 0 or self._loops(items, seen):
            count = min_items
        else:
            count = max(1, min_items)
        max_items = schema.get("maxItems")
        if isinstance(max_items, int):
            count = min(count, max_items)
        if not isinstance(items, dict):
            return ["string"] * count
        values = [self.make(items, depth + 1, seen) for _ in range(min(count, 1))]
        if count > 1:
            values += [self._variant(values[0], i) for i in range(1, count)]
        return values

    @staticmethod
    def _variant(value: Any, i: int) -> Any:
        """Another item for uniqueItems arrays of scalars."""
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return value + i
        if isinstance(value, str):
            return f"{value}{i}"
        return value

    @staticmethod
    def number(schema: dict[str, Any], kind: str) -> int | float:
        low, high = schema.get("minimum"), schema.get("maximum")
        ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        step = schema.get("multipleOf")
        value: float = 0
        if isinstance(low, (int, float)) and not isinstance(low, bool):
            value = low + (1 if ex_low is True else 0)
        elif isinstance(ex_low, (int, float)) and not isinstance(ex_low, bool):
            value = ex_low + 1
        elif isinstance(high, (int, float)) and not isinstance(high, bool) and high < 0:
            value = high - (1 if ex_high is True else 0)
        elif isinstance(ex_high, (int, float)) and not isinstance(ex_high, bool) and ex_high <= 0:
            value = ex_high - 1
        if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
            value = -(-value // step) * step
        return int(value) if kind == "integer" else float(value)

    @staticmethod
    def string(schema: dict[str, Any]) -> str:
        fmt = schema.get("format")
        value = FORMAT_SAMPLES.get(fmt, "string") if isinstance(fmt, str) else "string"
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            try:
                rx = re.compile(pattern)
            except re.error:
                rx = None
            if rx is not None and not rx.search(value):
                value = next((c for c in PATTERN_CANDIDATES if rx.search(c)), value)
        low, high = schema.get("minLength"), schema.get("maxLength")
        if isinstance(low, int) and len(value) < low:
            value = (value * (low // max(1, len(value)) + 1))[:low]
        if isinstance(high, int) and len(value) > high:
            value = value[:high]
        return value


def stand_in(spec: ApiSpec, schema: dict[str, Any] | None) -> Any:
    """A value ``schema`` accepts, with every property filled (see the module docstring)."""
    if not schema:
        return None
    return _Maker(spec).make(schema)
