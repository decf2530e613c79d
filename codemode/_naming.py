"""Stable Python names for operations and parameters.

Every operation gets ``api.<group>.<name>``: valid Python, unique, at most
:data:`MAX_KEY_LENGTH` characters, readable even without an operationId.
The mapping policy is data (the tables below), not a chain of ifs.
"""

from __future__ import annotations

import keyword
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["MAX_KEY_LENGTH", "NameRequest", "assign_names", "param_py_names", "snake"]

MAX_KEY_LENGTH = 64
_MAX_GROUP = 28
RESERVED_GROUPS = frozenset({"call"})  # ``api.call(...)`` is the generic escape hatch

# Verb for an operation without an operationId: (method, path ends in a parameter) -> verb.
VERBS: dict[tuple[str, bool], str] = {
    ("get", False): "list",
    ("get", True): "get",
    ("post", False): "create",
    ("post", True): "create",
    ("put", False): "replace",
    ("put", True): "replace",
    ("patch", False): "update",
    ("patch", True): "update",
    ("delete", False): "delete",
    ("delete", True): "delete",
    ("head", False): "head",
    ("head", True): "head",
    ("options", False): "options",
    ("options", True): "options",
    ("trace", False): "trace",
    ("trace", True): "trace",
    ("query", False): "query",
    ("query", True): "query",
}
# Path segments that carry no meaning for a name.
NOISE_SEGMENTS = re.compile(r"^(api|apis|rest|v\d+(\.\d+)*(alpha\d*|beta\d*)?|\d{4}-\d{2}-\d{2}|\d+)$", re.I)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[^0-9a-zA-Z]+")


def snake(text: str) -> str:
    """``listDNSRecords`` / ``dns-records for a zone`` -> ``list_dns_records`` / ``dns_records_for_a_zone``."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = _CAMEL.sub("_", text)
    return _NON_WORD.sub("_", text).strip("_").lower()


def _identifier(word: str, fallback: str) -> str:
    word = word or fallback
    if word[0].isdigit():
        word = f"{fallback}_{word}"
    if keyword.iskeyword(word) or keyword.issoftkeyword(word):
        word += "_"
    return word


def _strip_words(name: str, words: str) -> str:
    """Drop the group's words from an operation name when they add nothing."""
    if not words:
        return name
    for pattern, repl in ((rf"^{words}_", ""), (rf"_{words}$", ""), (rf"_{words}_", "_")):
        stripped = re.sub(pattern, repl, name, count=1).strip("_")
        if stripped and stripped != name:
            return stripped
    return name


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if "_" in cut[limit // 2 :]:
        cut = cut[: cut.rfind("_")]
    return cut.rstrip("_")


@dataclass(frozen=True, slots=True)
class NameRequest:
    method: str
    path: str
    operation_id: str | None
    tags: Sequence[str]


def _literal_segments(path: str) -> list[str]:
    return [s for s in path.strip("/").split("/") if s and "{" not in s and not NOISE_SEGMENTS.match(s)]


def _propose(req: NameRequest) -> tuple[str, str]:
    op_id = (req.operation_id or "").strip()
    segments = _literal_segments(req.path)
    if "/" in op_id:  # GitHub style: "repos/get-content"
        head, _, tail = op_id.rpartition("/")
        group, name = snake(head), snake(tail)
    else:
        if req.tags:
            group = snake(req.tags[0])
        elif segments:
            group = snake(segments[0])
        else:
            group = "root"
        if op_id and snake(op_id):
            name = _strip_words(snake(op_id), group)
        else:
            ends_in_param = req.path.rstrip("/").endswith("}")
            verb = VERBS.get((req.method, ends_in_param), req.method)
            rest = [snake(s) for s in segments if snake(s)]
            if rest and rest[0] == group:
                rest = rest[1:]
            name = "_".join([verb, *rest])
    group = _identifier(_clip(group, _MAX_GROUP), "g")
    if group in RESERVED_GROUPS:
        group += "_"
    name = _identifier(name, "op")
    return group, name


def assign_names(requests: Iterable[NameRequest]) -> list[tuple[str, str]]:
    """``(group, name)`` for each request, in order; ``f"{group}.{name}"`` is unique and short."""
    proposals = [_propose(r) for r in requests]
    taken: set[str] = set()
    out: list[tuple[str, str]] = []
    for group, name in proposals:
        budget = MAX_KEY_LENGTH - len(group) - 1
        base = _identifier(_clip(name, budget), "op")
        candidate, n = base, 1
        while f"{group}.{candidate}" in taken:
            n += 1
            suffix = f"_{n}"
            candidate = _clip(base, budget - len(suffix)) + suffix
        taken.add(f"{group}.{candidate}")
        out.append((group, candidate))
    return out


# Characters in wire names that carry meaning, spelled out before snake-casing (Twilio's ``DateCreated<``).
PARAM_SYMBOLS: dict[str, str] = {"<=": "_max", ">=": "_min", "<": "_before", ">": "_after", "[]": "", "$": ""}


def param_py_names(names: Sequence[tuple[str, str]]) -> list[str]:
    """Python keyword names for ``(wire name, location)`` pairs, unique within one operation.

    A wire name that is already a valid identifier is kept as is, so what the model
    writes is what the API documents; others are snake-cased.
    """
    out: list[str] = []
    used: set[str] = set()
    for wire, location in names:
        spelled = wire
        for symbol, words in PARAM_SYMBOLS.items():
            spelled = spelled.replace(symbol, words)
        base = wire if wire.isidentifier() and wire.isascii() else snake(spelled)
        base = _identifier(base, "p")
        candidate = base
        if candidate in used:
            candidate = f"{base}_{location}"
        n = 1
        while candidate in used:
            n += 1
            candidate = f"{base}_{location}_{n}"
        used.add(candidate)
        out.append(candidate)
    return out
