"""Stable Python names for operations and parameters.

Every operation gets ``api.<group>.<name>``: valid Python, unique, at most
:data:`MAX_KEY_LENGTH` characters, readable even without an operationId.
The mapping policy is data (the tables below), not a chain of ifs.
"""

from __future__ import annotations

import itertools
import keyword
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["MAX_KEY_LENGTH", "NameRequest", "assign_names", "param_py_names", "snake"]

MAX_KEY_LENGTH = 64
_MAX_GROUP = 32
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
# Path segments that carry no meaning for a name (versions with or without a "v", dates, numbers).
NOISE_SEGMENTS = re.compile(r"^(api|apis|rest|v?\d+(\.\d+)*(alpha\d*|beta\d*)?|\d{4}-\d{2}-\d{2}|\d+)$", re.I)
# Words that carry no meaning at the start of a group (Twilio's tag ``Api20100401Account``, a ``2.0`` tag).
NOISE_WORDS = re.compile(r"^(v?\d+([a-z]+\d*)?|api\d+|\d{8})$")
# Format suffixes of path segments (``/info.0.json``, Twilio's ``/Calls.json``).
FORMAT_SUFFIX = re.compile(r"\.(json|xml|yaml|yml|txt|csv|html|xhtml)$", re.I)
# Words dropped first when a name is too long.
FILLER_WORDS = frozenset({"a", "an", "the", "for", "of"})

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


def _strip_words(name: str, group: str) -> str:
    """Drop the group's words from an operation name when they add nothing.

    A leading run of the group's words always goes (``dns_records_for_a_zone`` +
    ``dns_records_for_a_zone_list_dns_records`` -> ``list_dns_records``); the whole group in the
    middle goes; at the end only when one word (the verb) is left (``list_incidents`` -> ``list``,
    but ``get_an_albums_tracks`` stays).
    """
    if not group:
        return name
    words, gwords = name.split("_"), group.split("_")
    common = 0
    while common < min(len(words) - 1, len(gwords)) and words[common] == gwords[common]:
        common += 1
    if common:
        return "_".join(words[common:])
    n = len(gwords)
    for i in range(1, len(words) - n):
        if words[i : i + n] == gwords:
            return "_".join(words[:i] + words[i + n :])
    if len(words) == n + 1 and words[1:] == gwords:
        return words[0]
    return name


MAX_FIT_CANDIDATES = 64
MAX_FIT_TRIES = 4000  # word combinations tried per name before dropping words greedily


def _fits(words: list[str], limit: int) -> Iterator[str]:
    """Ways to say ``words`` within ``limit`` characters, best first.

    Filler words go first, then middle words, longest first. The first word (usually the verb)
    and the last one (what sets the name apart from its siblings) are kept; cutting the tail off
    is the last resort.
    """
    words = [w for w in words if w]
    text = "_".join(words)
    if len(text) <= limit:
        yield text
        return
    words = [w for i, w in enumerate(words) if w not in FILLER_WORDS or i in (0, len(words) - 1)]
    middle = sorted(range(1, len(words) - 1), key=lambda i: (-len(words[i]), i))
    produced = tried = 0
    for k in range(1, len(middle) + 1):
        for drop in itertools.combinations(middle, k):
            tried += 1
            if tried > MAX_FIT_TRIES:  # a name of very many words: greedy from here on
                break
            text = "_".join(w for i, w in enumerate(words) if i not in drop)
            if len(text) <= limit:
                yield text
                produced += 1
                if produced >= MAX_FIT_CANDIDATES:
                    return
        if tried > MAX_FIT_TRIES:
            break
    greedy = list(words)
    while len("_".join(greedy)) > limit and len(greedy) > 2:
        del greedy[max(range(1, len(greedy) - 1), key=lambda i: (len(greedy[i]), -i))]
    yield _clip("_".join(greedy), limit)


def _fit(words: list[str], limit: int) -> str:
    return next(_fits(words, limit))


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


def _segment_words(segment: str) -> str:
    """``info.0.json`` -> ``info``: format suffixes and bare numbers say nothing."""
    words = [w for w in snake(FORMAT_SUFFIX.sub("", segment)).split("_") if w and not w.isdigit()]
    return "_".join(words)


def _literal_segments(path: str) -> list[str]:
    segments = [s for s in path.strip("/").split("/") if s and "{" not in s and not NOISE_SEGMENTS.match(s)]
    return [w for w in (_segment_words(s) for s in segments) if w]


def _group_words(raw: str) -> str:
    """A group from a tag or an operationId prefix, without leading version noise; "" if nothing is left."""
    words = [w for w in snake(raw).split("_") if w]
    while words and NOISE_WORDS.match(words[0]):
        words.pop(0)
    return "_".join(words)


def _path_params(path: str) -> list[str]:
    return re.findall(r"\{([^}]+)\}", path)


def _propose(req: NameRequest) -> tuple[str, str]:
    op_id = (req.operation_id or "").strip()
    segments = _literal_segments(req.path)
    group = ""
    if "/" in op_id:  # GitHub style: "repos/get-content"
        head, _, tail = op_id.rpartition("/")
        group, name = _group_words(head), snake(tail)
    else:
        for tag in req.tags:
            group = _group_words(tag)
            if group:
                break
        if not group:
            group = segments[0] if segments else "root"
        if op_id and snake(op_id):
            name = _strip_words(snake(op_id), group)
        else:
            ends_in_param = req.path.rstrip("/").endswith("}")
            verb = VERBS.get((req.method, ends_in_param), req.method)
            rest = list(segments)
            if rest and rest[0] == group:
                rest = rest[1:]
            name = "_".join([verb, *rest])
    group = _identifier(_fit((group or "root").split("_"), _MAX_GROUP), "g")
    if group in RESERVED_GROUPS:
        group += "_"
    name = _identifier(name, "op")
    return group, name


def assign_names(requests: Iterable[NameRequest]) -> list[tuple[str, str]]:
    """``(group, name)`` for each request, in order; ``f"{group}.{name}"`` is unique and short.

    Names that would collide say what sets them apart: the operation's last path parameter
    (``list`` and ``list_by_comic_id``), before a number is the last resort.
    """
    reqs = list(requests)
    proposals = [_propose(r) for r in reqs]
    counts: dict[tuple[str, str], int] = {}
    for proposal in proposals:
        counts[proposal] = counts.get(proposal, 0) + 1
    last = [snake(p[-1]) if (p := _path_params(r.path)) else "" for r in reqs]
    shared: dict[tuple[tuple[str, str], str], int] = {}
    for proposal, param in zip(proposals, last, strict=True):
        shared[(proposal, param)] = shared.get((proposal, param), 0) + 1
    for i, (proposal, param) in enumerate(zip(list(proposals), last, strict=True)):
        group, name = proposal
        if counts[proposal] > 1 and param and shared[(proposal, param)] == 1 and not name.endswith(param):
            proposals[i] = (group, f"{name}_by_{param}")
    # Names that fit as they are first, so a shortened name never takes one that needs no shortening.
    out: list[tuple[str, str] | None] = [None] * len(proposals)
    taken: set[str] = set()
    order = sorted(
        range(len(proposals)), key=lambda i: len(proposals[i][1]) > MAX_KEY_LENGTH - len(proposals[i][0]) - 1
    )
    for i in order:
        group, name = proposals[i]
        budget = MAX_KEY_LENGTH - len(group) - 1
        candidate = next(
            (c for c in _fits(name.split("_"), budget) if f"{group}.{_identifier(c, 'op')}" not in taken), None
        )
        candidate = _identifier(candidate, "op") if candidate is not None else None
        if candidate is None:
            base, n = _identifier(_fit(name.split("_"), budget), "op"), 1
            candidate = base
            while f"{group}.{candidate}" in taken:
                n += 1
                suffix = f"_{n}"
                candidate = _fit(base.split("_"), budget - len(suffix)) + suffix
        taken.add(f"{group}.{candidate}")
        out[i] = (group, candidate)
    return [pair for pair in out if pair is not None]


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
