"""API concepts, kept as data: what a user's words mean in the words APIs use.

A small embedding model knows English but not the trade: that "a TXT entry" is a DNS record,
"story points" an estimate, "ping my site every minute" an uptime check. Each concept pairs
*triggers* (how people say it) with *glosses* (how APIs name it). A query that says a trigger
is searched with the gloss beside it: the gloss is appended to the text the model embeds and its
words join the keyword query at a lower weight. A gloss is used only when every word of it
occurs in the spec being searched, so "DNS record" never reaches an API that has no DNS.

Written from general knowledge of common APIs (DNS and CDNs, source hosting, containers,
clouds, files, messaging, payments, AI, notebooks, project trackers, HTTP testing) and shaped by
the tuning set's misses (``bench/search_queries.yaml``: its queries fire three times as many
triggers as the held-out set's). Never from the held-out set (``bench/search_heldout.yaml``):
``tests/test_search_concepts.py`` fails on a trigger or gloss that quotes one of its queries.
Trigger syntax:

* words are matched by their stem, in order, with at most :data:`MAX_GAP` other words between
  two of them (``"point ip"`` matches "point www at a new IP");
* a word written with a capital letter matches only that exact spelling (``"TXT"``,
  ``"A record"``, ``"CI"``), so "a record" in "add a record" is not the DNS kind;
* ``"re:…"`` is a regular expression searched in the raw query.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from ._concept_table import CONCEPTS

__all__ = ["CONCEPTS", "MAX_GAP", "ConceptMatcher", "concept_matcher"]

MAX_GAP = 4  # other words allowed between two words of a trigger


_WORDS = re.compile(r"[A-Za-z0-9]+")
Word = tuple[bool, str]  # (matched by exact spelling?, the spelling or the stem)


@dataclass(frozen=True, slots=True)
class _Trigger:
    concept: int
    words: tuple[Word, ...]


class ConceptMatcher:
    """Finds the concepts a query names; ``stem`` must be the stemmer the keyword index uses.

    Triggers are indexed by their first word, so a query costs what its words match, not
    the size of the table.
    """

    def __init__(
        self, stem: Callable[[str], str], concepts: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    ) -> None:
        self._stem = stem
        self._glosses = [glosses for _, glosses in concepts]
        self._by_first: dict[Word, list[_Trigger]] = {}
        self._patterns: list[tuple[int, re.Pattern[str]]] = []
        for k, (triggers, _) in enumerate(concepts):
            for trigger in triggers:
                if trigger.startswith("re:"):
                    self._patterns.append((k, re.compile(trigger[3:], re.IGNORECASE)))
                    continue
                words = tuple(
                    (True, w) if any(c.isupper() for c in w) else (False, stem(w)) for w in _WORDS.findall(trigger)
                )
                if not words:
                    raise ValueError(f"concept trigger {trigger!r} has no word")
                self._by_first.setdefault(words[0], []).append(_Trigger(k, words))

    def concepts(self, query: str) -> set[int]:
        """Indices (into the table) of the concepts ``query`` names."""
        raw = _WORDS.findall(query)
        stems = [self._stem(w.lower()) for w in raw]
        found = {k for k, pattern in self._patterns if pattern.search(query)}
        for i, (word, stem) in enumerate(zip(raw, stems, strict=True)):
            for trigger in self._by_first.get((True, word), []) + self._by_first.get((False, stem), []):
                if trigger.concept not in found and _follows(trigger.words, 1, i + 1, raw, stems):
                    found.add(trigger.concept)
        return found

    def glosses(self, query: str) -> list[str]:
        """The glosses of every concept ``query`` names, in table order, without repeats."""
        out: list[str] = []
        for k in sorted(self.concepts(query)):
            out += [g for g in self._glosses[k] if g not in out]
        return out


def _follows(words: tuple[Word, ...], k: int, start: int, raw: list[str], stems: list[str]) -> bool:
    """Whether ``words[k:]`` occur in order from ``start``, at most :data:`MAX_GAP` words apart."""
    if k == len(words):
        return True
    exact, want = words[k]
    for i in range(start, min(len(raw), start + MAX_GAP + 1)):
        if (raw[i] if exact else stems[i]) == want and _follows(words, k + 1, i + 1, raw, stems):
            return True
    return False


@lru_cache(maxsize=4)
def concept_matcher(stem: Callable[[str], str]) -> ConceptMatcher:
    """The matcher for :data:`CONCEPTS` with ``stem`` (built once per stemmer)."""
    return ConceptMatcher(stem, CONCEPTS)
