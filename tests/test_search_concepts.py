"""API concepts: what users say -> what APIs call it (codemode._concepts, codemode._concept_table)."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from codemode import load_spec
from codemode._concept_table import CONCEPTS
from codemode._concepts import ConceptMatcher, concept_matcher
from codemode._embed import default_embedder
from codemode._ir import ApiSpec
from codemode._progress import Step
from codemode._search import SearchIndex, _stem, tokenize

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "specs"
PETSTORE = ROOT / "specs" / "petstore3-openapi.yaml"


@pytest.fixture(scope="module")
def cloudflare() -> ApiSpec:
    return load_spec(str(SHARED / "cloudflare-openapi.json"))


@pytest.fixture(scope="module")
def kinto() -> ApiSpec:
    return load_spec(str(SHARED / "kinto-26.5.0-served-__api__.json"))


def test_every_trigger_and_gloss_is_well_formed() -> None:
    seen = 0
    for triggers, glosses in CONCEPTS:
        assert triggers and glosses, (triggers, glosses)
        for t in triggers:
            if t.startswith("re:"):
                re.compile(t[3:])
            else:
                assert re.search(r"[A-Za-z0-9]", t), t
            seen += 1
        for g in glosses:
            assert tokenize(g), f"gloss {g!r} has no word the keyword index would use"
    assert seen > 1000  # the table is broad, not a handful of patches
    ConceptMatcher(_stem, CONCEPTS)  # compiles


@pytest.mark.parametrize(
    ("query", "gloss"),
    [
        ("add a TXT entry so Google can verify the domain", "DNS record"),
        ("point www at a new IP address", "DNS record"),  # in order, other words between
        ("change the A record of api.example.com", "DNS record"),  # capitalised: exactly that spelling
        ("put a */15 * * * * schedule on my script", "cron job"),  # a regular expression
        ("run the cleanup every night at 3am", "cron job"),
        ("simulate a 503 from the server", "status code"),
        ("store the database password in the cluster", "secret"),
        ("restarting the stuck kernels", "restart kernel"),  # stems: stuck ~ stuck, kernels ~ kernel
    ],
)
def test_triggers_match_by_stem_order_case_and_pattern(query: str, gloss: str) -> None:
    assert gloss in concept_matcher(_stem).glosses(query)


@pytest.mark.parametrize(
    ("query", "not_gloss"),
    [
        ("add a record to the tasks collection", "DNS record"),  # "a record" is not the DNS kind
        ("find a 415 area code number to buy", "status code"),  # an area code is not an HTTP status
        ("IP point", "DNS record"),  # out of order
        ("point to the first of the many the ip", "DNS record"),  # too far apart
        ("close issue #17 with state_reason not_planned", "sizes"),
    ],
)
def test_triggers_do_not_fire_on_look_alikes(query: str, not_gloss: str) -> None:
    assert not_gloss not in concept_matcher(_stem).glosses(query)


def test_a_gloss_is_used_only_by_a_spec_that_has_its_words(cloudflare: ApiSpec, kinto: ApiSpec) -> None:
    query = "add a TXT entry so Google can verify I own example.com"
    cf = SearchIndex(cloudflare, embedder=None)
    kt = SearchIndex(kinto, embedder=None)
    assert "DNS record" in cf.glosses(query)
    assert "DNS record" not in kt.glosses(query)  # Kinto has records, but no DNS
    assert cf.semantic_query(query) == f"{query} ({'; '.join(cf.glosses(query))})"
    assert kt.semantic_query("add a record") == "add a record"  # nothing to add: the query as typed


def test_glosses_reach_keyword_search(cloudflare: ApiSpec) -> None:
    index = SearchIndex(cloudflare, embedder=None)
    labels = [
        h.operation.label for h in index.search("add a TXT entry so Google can verify I own example.com", limit=5)
    ]
    assert "POST /zones/{zone_id}/dns_records" in labels, labels
    terms, _ = index.query_terms("add a TXT entry")
    assert terms["dns"] < terms["txt"]  # a gloss's words weigh less than the user's own


class Recorder:
    """A fake embedder that remembers the query texts it was asked to embed."""

    model_id = "recorder"
    no_match_cosine = -1.0

    def __init__(self) -> None:
        self.queries: list[str] = []

    def embed_documents(self, texts: Sequence[str], progress: Step | None = None) -> np.ndarray[Any, Any]:
        if progress is not None:
            progress.advance(len(texts))
        return np.ones((len(texts), 4), dtype=np.float32) / 2.0

    def embed_query(self, text: str) -> np.ndarray[Any, Any]:
        self.queries.append(text)
        return np.ones(4, dtype=np.float32) / 2.0


def test_the_embedded_query_carries_the_glosses(tmp_path: Path) -> None:
    rec = Recorder()
    index = SearchIndex(load_spec(str(PETSTORE)), embedder=rec, cache_dir=tmp_path)
    assert index.load_embeddings()
    index.search("I'd like to adopt the puppy with id 10")
    assert rec.queries[-1].startswith("I'd like to adopt the puppy with id 10 (") and "pet" in rec.queries[-1]


def test_a_hostile_query_of_trigger_words_is_fast() -> None:
    matcher = concept_matcher(_stem)
    words = "how much do i how much do i owe point the ip point ip a record A record " * 40
    started = time.perf_counter()
    matcher.glosses(words[:2000])
    assert time.perf_counter() - started < 2.0  # a bound on a hang, not a speed target


@pytest.mark.skipif(default_embedder() is None, reason="semantic model not installed: `make setup` installs it")
def test_concepts_lift_a_query_the_model_alone_misses(tmp_path: Path) -> None:
    """ "which languages …" is a question about kernel specs: the gloss says so (tuning-set query)."""
    spec = load_spec(str(SHARED / "jupyter_server-2.21.1-api.yaml"))
    index = SearchIndex(spec, cache_dir=tmp_path)
    assert index.load_embeddings()
    query = "which languages can I run notebooks in here"
    labels = [h.operation.label for h in index.search(query, limit=3)]
    assert "GET /api/kernelspecs" in labels, labels


# -- integrity: the held-out set (bench/search_heldout.yaml) must not have shaped the table ----------

BENCH = ROOT / "bench"
MIN_QUOTE_WORDS = 3  # a phrase this long, copied from a held-out query, is that query's wording, not vocabulary


def _queries(name: str) -> list[str]:
    import yaml

    specs = yaml.safe_load((BENCH / name).read_text())["specs"]
    return [q["q"] for entry in specs.values() for q in entry["queries"]]


def _words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Za-z0-9']+", text)]


def _ngrams(queries: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for q in queries:
        ws = _words(q)
        for n in range(MIN_QUOTE_WORDS, len(ws) + 1):
            out.update(" ".join(ws[i : i + n]) for i in range(len(ws) - n + 1))
    return out


def _phrases() -> list[tuple[int, str]]:
    """Every plain (not ``re:``) trigger and every gloss of at least MIN_QUOTE_WORDS words, with its concept."""
    return [
        (k, phrase)
        for k, (triggers, glosses) in enumerate(CONCEPTS)
        for phrase in (*triggers, *glosses)
        if not phrase.startswith("re:") and len(_words(phrase)) >= MIN_QUOTE_WORDS
    ]


def test_no_trigger_or_gloss_quotes_a_heldout_query() -> None:
    """A 3+-word trigger or gloss that is word for word part of a held-out query, and of no tuning query,
    can only have come from reading the held-out set."""
    heldout, tuning = _ngrams(_queries("search_heldout.yaml")), _ngrams(_queries("search_queries.yaml"))
    assert len(heldout) > 1000  # the held-out set was read
    quoted = [(k, phrase) for k, phrase in _phrases() if " ".join(_words(phrase)) in heldout - tuning]
    assert not quoted, f"concept phrases quoting a held-out query: {quoted}"


def test_no_long_trigger_fires_on_the_heldout_set_alone() -> None:
    """The looser form of the same check, with the matcher's own rules (stems, in order, gaps): a trigger
    of 3+ words that fires on a held-out query must fire on some tuning query too."""
    heldout, tuning = _queries("search_heldout.yaml"), _queries("search_queries.yaml")
    suspicious = []
    for k, trigger in _phrases():
        if trigger not in CONCEPTS[k][0]:
            continue  # a gloss
        one = ConceptMatcher(_stem, (((trigger,), CONCEPTS[k][1]),))
        hits = [q for q in heldout if one.concepts(q)]
        if hits and not any(one.concepts(q) for q in tuning):
            suspicious.append((trigger, hits[0]))
    assert not suspicious, f"long triggers that fire only on held-out queries: {suspicious}"


def test_the_checks_catch_a_trigger_copied_from_the_heldout_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both checks fail on a table with one held-out query's phrasing in it."""
    query = next(q for q in _queries("search_heldout.yaml") if len(_words(q)) >= 5)
    copied = " ".join(_words(query)[1:5])
    monkeypatch.setattr(sys.modules[__name__], "CONCEPTS", (*CONCEPTS, ((copied,), ("copied",))))
    with pytest.raises(AssertionError, match="quoting a held-out query"):
        test_no_trigger_or_gloss_quotes_a_heldout_query()
    with pytest.raises(AssertionError, match="fire only on held-out"):
        test_no_long_trigger_fires_on_the_heldout_set_alone()
