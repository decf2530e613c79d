"""JSON Schema validation in bounded time: linear-time patterns, and a deadline.

Guest values (arguments) and upstream bodies (responses) are validated on the host, in a
worker thread that holds the GIL while it works. Two things could make that take very long:

* **Regular expressions.** JSON Schema ``pattern`` (and ``patternProperties``) with Python's
  backtracking ``re`` can take hours: Cloudflare's ``^([a-z]+[a-z0-9_-]*[a-z0-9]+)$`` grows as
  n³ on ``"a" * n + "!"``. Here every pattern runs on RE2 (``google-re2``), in time linear in
  the input. A pattern RE2 cannot run (lookaround, backreferences) is not checked on the host:
  it passes, and the upstream judges the value.
* **Everything else** (nested ``oneOf``, large arrays): every keyword checks the deadline of
  the run it validates for (:func:`deadline`) and raises :class:`ValidationTimeout` past it.
  ``uniqueItems`` is checked in linear time rather than jsonschema's quadratic fallback.

The keyword functions are jsonschema's own (via ``openapi-schema-validator``'s OAS 3.0 and 3.1
validators), with their module global ``re`` rebound to :data:`_RE2` in copies of them, so
their behaviour stays jsonschema's apart from the regex engine.
"""

from __future__ import annotations

import contextvars
import functools
import json
import math
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import re2
from jsonschema import _utils
from jsonschema.exceptions import ValidationError
from jsonschema.validators import extend
from openapi_schema_validator import OAS30Validator, OAS31Validator

from ._errors import UsageError

__all__ = ["ValidationTimeout", "deadline", "pattern_search", "validator_class"]

_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("codemode_validation_deadline", default=math.inf)
_PATTERN_CACHE_SIZE = 1024
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # an unsupported pattern is expected, not worth a line on stderr


class ValidationTimeout(UsageError):
    """Validation ran into the deadline of the run it validates for."""

    code = "call.validation_timeout"


@contextmanager
def deadline(at: float) -> Iterator[None]:
    """Validation inside the block stops at ``at`` (``time.monotonic()``) with :class:`ValidationTimeout`."""
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


@functools.lru_cache(maxsize=_PATTERN_CACHE_SIZE)
def _compiled(pattern: str) -> Any:
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error:
        return None


def pattern_search(pattern: str, text: str) -> bool:
    """``re.search`` semantics on RE2; True (not checked) for a pattern RE2 cannot run."""
    compiled = _compiled(pattern)
    if compiled is None:
        return True
    try:
        return compiled.search(text) is not None
    except UnicodeEncodeError:  # lone surrogates (JSON allows them): matched as U+FFFD
        return compiled.search(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")) is not None


class _Re2Module:
    """The part of the ``re`` module jsonschema's keyword functions use, on RE2."""

    @staticmethod
    def search(pattern: str, text: str) -> bool:
        return pattern_search(pattern, text)


_RE2 = _Re2Module()


def _rebound(func: Callable[..., Any], **globals_: Any) -> Callable[..., Any]:
    """A copy of ``func`` whose module globals are overridden by ``globals_``."""
    namespace = {**func.__globals__, **globals_}
    copy = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__)
    namespace.update({name: copy for name, value in globals_.items() if value is func})
    return copy


def _find_evaluated_property_keys() -> Callable[..., Any]:
    original = _utils.find_evaluated_property_keys_by_schema
    copy = _rebound(original, re=_RE2)
    copy.__globals__["find_evaluated_property_keys_by_schema"] = copy  # it recurses through its global name
    return copy


_find_additional = _rebound(_utils.find_additional_properties, re=_RE2)
_find_evaluated = _find_evaluated_property_keys()


def _canonical(value: Any) -> str:
    """A JSON text equal for values JSON Schema calls equal (1 == 1.0; true != 1)."""

    def normal(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {str(k): normal(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [normal(x) for x in v]
        return v

    return json.dumps(normal(value), sort_keys=True, default=repr)


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if unique and validator.is_type(instance, "array"):
        seen: set[str] = set()
        for item in instance:
            key = _canonical(item)
            if key in seen:
                yield ValidationError(f"{_short(instance)} has non-unique elements")
                return
            seen.add(key)


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not pattern_search(pattern, instance):
        yield ValidationError(f"{_short(instance, 60)} does not match {pattern!r}")


def _timed(keyword: Callable[..., Any]) -> Callable[..., Any]:
    def check(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        if time.monotonic() > _DEADLINE.get():
            raise ValidationTimeout("validation ran past the execution's deadline", code="call.validation_timeout")
        return keyword(validator, value, instance, schema)

    return check


def _on_re2(keyword: Callable[..., Any]) -> Callable[..., Any]:
    """``keyword`` with every regex it reaches (directly or through jsonschema's helpers) on RE2."""
    names = set(keyword.__code__.co_names)
    swaps = {
        name: value
        for name, value in (
            ("re", _RE2),
            ("find_additional_properties", _find_additional),
            ("find_evaluated_property_keys_by_schema", _find_evaluated),
        )
        if name in names
    }
    return _rebound(keyword, **swaps) if swaps else keyword


def _bounded(base: Any) -> Any:
    keywords = {name: _on_re2(func) for name, func in base.VALIDATORS.items()}
    keywords["pattern"] = _pattern
    keywords["uniqueItems"] = _unique_items
    return extend(base, {name: _timed(func) for name, func in keywords.items()})


_CLASSES: dict[str, Any] = {}


def validator_class(dialect: str) -> Any:
    """The bounded validator class for ``"oas31"``, or OAS 3.0 for anything else."""
    key = "oas31" if dialect == "oas31" else "oas30"
    if key not in _CLASSES:
        _CLASSES[key] = _bounded(OAS31Validator if key == "oas31" else OAS30Validator)
    return _CLASSES[key]
