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


_CATEGORY_SAMPLES = {"CATEGORY_DIGIT": "0", "CATEGORY_NOT_DIGIT": "a", "CATEGORY_WORD": "a",
                     "CATEGORY_NOT_WORD": "-", "CATEGORY_SPACE": " ", "CATEGORY_NOT_SPACE": "a"}  # fmt: skip
_CATEGORY_CLASSES = {"CATEGORY_DIGIT": r"\d", "CATEGORY_WORD": r"\w", "CATEGORY_SPACE": r"\s",
                     "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_NOT_WORD": r"\W", "CATEGORY_NOT_SPACE": r"\S"}  # fmt: skip
_CANDIDATE_CHARS = "a0A-_. b1Z9xz:/"
MAX_PATTERN_REPEAT = 40
MAX_PATTERN_SAMPLE = 512


def pattern_sample(pattern: str) -> str | None:
    """A short string that ``pattern`` matches (``re.search``), or ``None`` when it cannot tell."""
    try:
        from re import _parser  # type: ignore[attr-defined]

        parsed = _parser.parse(pattern)
        groups: dict[int, str] = {}
        text = _emit(list(parsed), groups)
        if len(text) > MAX_PATTERN_SAMPLE:  # checked with Python's re below: keep the input short
            return None
        return text if re.search(pattern, text) else None
    except (re.error, ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError):
        return None


def _emit(items: list[Any], groups: dict[int, str]) -> str:
    out: list[str] = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append(next(c for c in _CANDIDATE_CHARS if ord(c) != arg))
        elif name == "ANY":
            out.append("a")
        elif name == "IN":
            out.append(_one_of(arg))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            count = min(1 if high != 0 else 0, MAX_PATTERN_REPEAT) if low == 0 else low
            if count > MAX_PATTERN_SAMPLE:
                raise ValueError("pattern sample too long")
            once = _emit(list(sub), groups) if count else ""
            if len(once) * count + sum(len(x) for x in out) > MAX_PATTERN_SAMPLE:
                raise ValueError("pattern sample too long")
            out.append(once * count)
        elif name == "SUBPATTERN":
            group, _add, _del, sub = arg
            text = _emit(list(sub), groups)
            if group is not None:
                groups[group] = text
            out.append(text)
        elif name == "ATOMIC_GROUP":
            out.append(_emit(list(arg), groups))
        elif name == "BRANCH":
            out.append(_emit(list(arg[1][0]), groups))
        elif name == "GROUPREF":
            out.append(groups.get(arg, ""))
        elif name in ("AT", "ASSERT", "ASSERT_NOT"):
            continue
        elif name == "CATEGORY":
            out.append(_CATEGORY_SAMPLES.get(str(arg), "a"))
        else:
            raise ValueError(name)
    return "".join(out)


def _one_of(items: list[Any]) -> str:
    negate = bool(items) and str(items[0][0]) == "NEGATE"
    if not negate:
        op, arg = items[0]
        name = str(op)
        if name == "LITERAL":
            return chr(arg)
        if name == "RANGE":
            return chr(arg[0])
        if name == "CATEGORY":
            return _CATEGORY_SAMPLES.get(str(arg), "a")
        raise ValueError(name)
    cls = "[" + "".join(_class_text(op, arg) for op, arg in items[1:]) + "]"
    return next(c for c in _CANDIDATE_CHARS if not re.fullmatch(cls, c))


def _class_text(op: Any, arg: Any) -> str:
    name = str(op)
    if name == "LITERAL":
        return re.escape(chr(arg))
    if name == "RANGE":
        return f"{re.escape(chr(arg[0]))}-{re.escape(chr(arg[1]))}"
    if name == "CATEGORY":
        return _CATEGORY_CLASSES[str(arg)]
    raise ValueError(name)


def _holds_object(value: Any) -> bool:
    return isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value))


class _Maker:
    def __init__(self, spec: ApiSpec, *, request: bool = False) -> None:
        self.spec = spec
        self.hidden = "readOnly" if request else "writeOnly"  # properties one direction never carries
        self.budget = MAX_VALUES
        cls = OAS31Validator if spec.dialect == "oas31" else OAS30Validator
        self._cls = cls
        self._formats = cls.FORMAT_CHECKER  # examples must also have the format they claim (dates, emails…)
        self.minimal = False  # fill only required properties (set while trying oneOf branches)
        self._components = {"schemas": spec.schemas}

    def accepts(self, schema: dict[str, Any], value: Any) -> bool:
        try:
            validator = self._cls({**schema, "components": self._components}, format_checker=self._formats)
            return not any(True for _ in validator.iter_errors(value))
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
            if key in schema and schema[key] is not None and self._usable(schema, schema[key]):
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

    def _usable(self, schema: dict[str, Any], value: Any) -> bool:
        """An example is used only if its schema accepts it (specs carry stale examples). For a request,
        whole-object examples are not used: they often show the ``readOnly`` fields of a response."""
        if self.hidden == "readOnly" and _holds_object(value):
            return False
        return self.accepts(schema, value)

    def choose(self, schema: dict[str, Any], options: list[Any], depth: int, seen: tuple[str, ...]) -> Any:
        rest = {k: v for k, v in schema.items() if k not in ("oneOf", "anyOf", "discriminator", "example", "default")}
        first: Any = None
        for minimal in (False, True):  # every property first; then only required ones (oneOf of `required` lists)
            self.minimal = minimal
            try:
                for i, option in enumerate(options):
                    if not isinstance(option, dict):
                        continue
                    merged = {"allOf": [rest, option]} if rest else option
                    value = self._discriminated(schema, option, self.make(merged, depth + 1, seen))
                    if i == 0 and not minimal:
                        first = value
                    if value is not None and self.accepts(schema, value):
                        return value
            finally:
                self.minimal = False
        return first

    @staticmethod
    def _discriminated(schema: dict[str, Any], option: dict[str, Any], value: Any) -> Any:
        """Set the discriminator property to a value that names the chosen branch."""
        disc = schema.get("discriminator")
        ref = option.get("$ref")
        if not (isinstance(disc, dict) and isinstance(value, dict) and isinstance(ref, str)):
            return value
        keys = [k for k, target in (disc.get("mapping") or {}).items() if target == ref]
        prop = disc.get("propertyName")
        if keys and isinstance(prop, str) and value.get(prop) not in keys:
            value = {**value, prop: keys[0]}
        return value

    def all_of(self, schema: dict[str, Any], depth: int, seen: tuple[str, ...]) -> Any:
        """Objects: one merged schema, filled in one go. Other values: the first part's value every part accepts."""
        flat, flat_seen = self.flatten(schema, seen, 0)
        if "properties" in flat or isinstance(flat.get("items"), dict):
            return self.make(flat, depth + 1, flat_seen)
        parts = [s for s in schema["allOf"] if isinstance(s, dict)]
        if "oneOf" in flat or "anyOf" in flat:
            # one part chooses, the others constrain (Cloudflare's rule: the request rule's oneOf plus a
            # `required` list): each branch is filled with the constraints merged in
            value = self.make(flat, depth + 1, flat_seen)
            if self.accepts(schema, value):
                return value
        # later parts refine earlier ones (a common envelope, then the operation's own `result`)
        ordered = sorted(reversed(parts), key=lambda p: "anyOf" in p or "oneOf" in p)
        for part in ordered:
            value = self.make(part, depth + 1, seen)
            if self.accepts(schema, value):
                return value
        return self.make(ordered[0], depth + 1, seen) if ordered else self.make(flat, depth + 1, flat_seen)

    def flatten(
        self, schema: dict[str, Any], seen: tuple[str, ...], level: int
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """One schema equivalent to an ``allOf`` (properties merged, ``required`` joined), to fill in one go."""
        merged: dict[str, Any] = {}
        props: dict[str, Any] = {}
        required: list[str] = []
        parts = [
            {k: v for k, v in schema.items() if k != "allOf"},
            *(s for s in schema["allOf"] if isinstance(s, dict)),
        ]
        for part in parts:
            part, seen = self.resolve(part, seen)
            if isinstance(part.get("allOf"), list) and level < 16:
                part, seen = self.flatten(part, seen, level + 1)
            for name, sub in (part.get("properties") or {}).items():
                if name in props and props[name] != sub and isinstance(sub, dict):
                    props[name] = {"allOf": [props[name], sub]}
                else:
                    props.setdefault(name, sub)
            required += [r for r in part.get("required") or [] if isinstance(r, str) and r not in required]
            for key, value in part.items():
                if key == "items" and isinstance(merged.get("items"), dict) and merged["items"] != value:
                    merged["items"] = {"allOf": [merged["items"], value]}  # arrays whose items two parts shape
                elif key not in ("properties", "required", "description", "title"):
                    merged.setdefault(key, value)
        if props:
            merged["properties"] = props
            merged.setdefault("type", "object")
        if required:
            merged["required"] = required
        return merged, seen

    def object(self, schema: dict[str, Any], depth: int, seen: tuple[str, ...]) -> dict[str, Any]:
        props = schema.get("properties") or {}
        required = {r for r in schema.get("required") or [] if isinstance(r, str)}
        out: dict[str, Any] = {}
        full = depth < MAX_DEPTH and self.budget > 0 and not self.minimal
        optional = 0
        for name, sub in props.items():
            if name not in required:
                optional += 1
                if not full or optional > MAX_PROPERTIES:
                    continue
            if self._hidden(sub, seen) and (name not in required or self.spec.dialect == "oas30"):
                continue  # OpenAPI 3.0: required applies to one direction only; 3.1: required is required
            if name not in required and self._loops(sub, seen) and not self._is_array(sub):
                continue  # an optional property that leads back to an enclosing schema: stop here
            out[name] = self.make(sub, depth + 1, seen)
        for name in [r for r in schema.get("required") or [] if isinstance(r, str) and r not in out]:
            if name not in props:
                addl = schema.get("additionalProperties")
                out[name] = self.make(addl, depth + 1, seen) if isinstance(addl, dict) else "string"
        min_props = schema.get("minProperties")
        addl = schema.get("additionalProperties")
        if isinstance(min_props, int) and len(out) < min_props:
            for i in range(min_props - len(out)):
                out[f"key{i}"] = self.make(addl, depth + 1, seen) if isinstance(addl, dict) else "string"
        return out

    def _hidden(self, schema: Any, seen: tuple[str, ...]) -> bool:
        """``readOnly`` (in a request) or ``writeOnly`` (in a response), on the property or what it refers to."""
        if not isinstance(schema, dict):
            return False
        resolved, _ = self.resolve(schema, seen)
        parts = [schema, resolved, *(p for p in resolved.get("allOf") or [] if isinstance(p, dict))]
        return any(part.get(self.hidden) is True for part in parts)

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
            unique = schema.get("uniqueItems") is True
            values += [self._variant(values[0], i) if unique else values[0] for i in range(1, count)]
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
                value = next((c for c in PATTERN_CANDIDATES if rx.search(c)), None) or pattern_sample(pattern) or value
        low, high = schema.get("minLength"), schema.get("maxLength")
        if isinstance(low, int) and len(value) < low:
            value = (value * (low // max(1, len(value)) + 1))[:low]
        if isinstance(high, int) and len(value) > high:
            value = value[:high]
        return value


def stand_in(spec: ApiSpec, schema: dict[str, Any] | None, *, request: bool = False) -> Any:
    """A value ``schema`` accepts, with every property filled (see the module docstring).

    ``request``: a value to send (``readOnly`` properties left out), else one received (``writeOnly`` left out).
    """
    if not schema:
        return None
    return _Maker(spec, request=request).make(schema)
