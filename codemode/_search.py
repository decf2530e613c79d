"""Ranked search over the operations of an :class:`~codemode._ir.ApiSpec`.

BM25F over weighted fields (names, path, summary, tags, description, parameter
names, schema names) with Snowball stemming, plus two pieces of policy kept as
data: a synonym table that maps how users speak to how APIs are written, and an
intent table that maps task verbs to HTTP methods.

When the optional embedding model is installed (``codemode-mcp[semantic]``, see
:mod:`codemode._embed`), a second ranker scores operations by cosine similarity of
sentence embeddings, and the two rankings are fused by reciprocal rank. Building
the BM25 index is cheap and done in the constructor; the embeddings are not:
:meth:`SearchIndex.load_embeddings` loads them from the disk cache or computes
them (tens of seconds for a spec of ~1,500 operations on first use), and search
uses BM25 alone until they are ready.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import snowballstemmer  # type: ignore[import-untyped]

from ._ir import ApiSpec, Operation
from ._naming import snake
from ._render import referenced_names
from ._vocabulary import INTENTS, SYNONYMS

if TYPE_CHECKING:
    from ._embed import Embedder

__all__ = ["Hit", "SearchIndex"]

# Field weights for BM25F.
FIELD_WEIGHTS: dict[str, float] = {
    "name": 3.0, "summary": 3.0, "path": 2.0, "tags": 1.5, "schemas": 1.0, "params": 0.6, "description": 0.8,
}  # fmt: skip
K1, B = 1.2, 0.75
SYNONYM_WEIGHT = 0.45
METHOD_BOOST = 0.6  # multiplier on the score share when the query's intent matches the method
RRF_K = 60  # reciprocal-rank fusion constant (the usual default; flat enough that both rankers count)
log = logging.getLogger("codemode.search")

STOPWORDS = frozenset(
    "a an the of for to in on at by with from and or is are be this that these those it its my our your me i we "
    "you please can could would should will want need some any into onto via as up out about over all".split()
) - {"all", "up", "out"}

_WORD = re.compile(r"[A-Za-z][a-z]+|[A-Z]+(?![a-z])|\d+")
_stemmer = snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


def tokenize(text: str) -> list[str]:
    return [_stem(w.lower()) for w in _WORD.findall(text) if w.lower() not in STOPWORDS]


@dataclass(frozen=True, slots=True)
class Hit:
    operation: Operation
    score: float


class SearchIndex:
    """Ranked search over ``spec``. Construction builds BM25 only (milliseconds).

    ``embedder``: ``"auto"`` uses the installed embedding model if there is one,
    ``None`` disables semantic ranking, or pass any :class:`~codemode._embed.Embedder`.
    Semantic ranking starts once :meth:`load_embeddings` has run.
    """

    def __init__(
        self, spec: ApiSpec, *, embedder: Embedder | Literal["auto"] | None = "auto", cache_dir: Path | None = None
    ) -> None:
        self.spec = spec
        self._ops = spec.operations
        self._embedder_arg = embedder
        self._embedder: Embedder | None = None
        self._matrix: Any = None  # numpy (n, d) once loaded
        self._cache_dir = cache_dir
        self._embed_lock = threading.Lock()
        self._tf: list[dict[str, float]] = []
        self._len: list[float] = []
        df: Counter[str] = Counter()
        for op in self._ops:
            tf: dict[str, float] = defaultdict(float)
            length = 0.0
            for field, text in self._fields(op):
                w = FIELD_WEIGHTS[field]
                for tok in tokenize(text):
                    tf[tok] += w
                    length += w
            self._tf.append(dict(tf))
            self._len.append(length)
            df.update(tf.keys())
        n = max(len(self._ops), 1)
        self._avg = (sum(self._len) / n) or 1.0
        self._idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
        self._postings: dict[str, list[int]] = defaultdict(list)
        for i, tf in enumerate(self._tf):
            for t in tf:
                self._postings[t].append(i)
        self._syn = {_stem(k): tuple(_stem(v) for v in vs) for k, vs in SYNONYMS.items()}
        self._intent = {_stem(k): v for k, v in INTENTS.items()}

    @property
    def semantic(self) -> bool:
        """Whether the embedding ranker is in use (its operation embeddings are loaded)."""
        return self._matrix is not None

    def load_embeddings(self, *, background: bool = False) -> bool:
        """Load or compute the operation embeddings; blocking unless ``background``.

        Idempotent and thread-safe. Returns whether semantic ranking is on (for
        ``background=True``: whether it already was). Never raises for a missing model.
        """
        if background:
            threading.Thread(target=self.load_embeddings, name="codemode-embed", daemon=True).start()
            return self.semantic
        with self._embed_lock:
            if self._matrix is not None or self._embedder_arg is None:
                return self._matrix is not None
            try:
                from ._embed import default_embedder, operation_matrix

                emb = default_embedder() if self._embedder_arg == "auto" else self._embedder_arg
                if emb is None or isinstance(emb, str):
                    self._embedder_arg = None
                    return False
                matrix = operation_matrix(self.spec, emb, self._cache_dir)
            except Exception as exc:  # noqa: BLE001 - the optional ranker must never break search
                log.warning("semantic search disabled: %s: %s", type(exc).__name__, exc)
                self._embedder_arg = None
                return False
            self._embedder, self._matrix = emb, matrix
            return True

    @staticmethod
    def _fields(op: Operation) -> Iterable[tuple[str, str]]:
        yield "name", f"{op.group} {op.name} {snake(op.operation_id or '')}".replace("_", " ")
        yield "summary", op.summary
        yield "path", " ".join(s for s in op.path.split("/") if s and "{" not in s).replace("_", " ")
        yield "tags", " ".join(op.tags)
        yield "description", op.description[:400]
        yield "params", " ".join(p.name for p in op.params if p.location in ("path", "query", "body", "form"))
        names = [n for p in op.params for n in referenced_names(p.schema)]
        resp = op.success_response()
        if resp is not None:
            names += referenced_names(resp.schema)
        yield "schemas", " ".join(names[:6])

    def _score(self, terms: dict[str, float], candidates: Iterable[int] | None = None) -> dict[int, float]:
        scores: dict[int, float] = defaultdict(float)
        for term, qw in terms.items():
            idf = self._idf.get(term)
            if idf is None:
                continue
            for i in self._postings[term]:
                tf = self._tf[i][term]
                norm = tf * (K1 + 1) / (tf + K1 * (1 - B + B * self._len[i] / self._avg))
                scores[i] += qw * idf * norm
        return scores

    def query_terms(self, query: str) -> tuple[dict[str, float], set[str]]:
        terms: dict[str, float] = {}
        methods: set[str] = set()
        for tok in tokenize(query):
            terms[tok] = max(terms.get(tok, 0.0), 1.0)
            for syn in self._syn.get(tok, ()):
                if syn != tok:
                    terms[syn] = max(terms.get(syn, 0.0), SYNONYM_WEIGHT)
            methods.update(self._intent.get(tok, ()))
        return terms, methods

    def search(
        self,
        query: str,
        *,
        tag: str | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
        limit: int = 8,
    ) -> list[Hit]:
        terms, methods = self.query_terms(query)
        allowed = self._filter(tag, method, path_prefix)
        semantic = self._matrix is not None and bool(query.strip())
        if not terms and not semantic:  # a filter-only query lists in spec order
            return [Hit(self._ops[i], 0.0) for i in allowed][:limit] if (tag or method or path_prefix) else []
        scores = self._score(terms)
        if methods:
            for i in scores:
                if self._ops[i].method in methods:
                    scores[i] *= 1 + METHOD_BOOST
        allowed_set = set(allowed)
        if semantic:
            scores = self._fuse(query, scores, allowed)
        ranked = sorted((i for i in scores if i in allowed_set), key=lambda i: (-scores[i], i))
        return [Hit(self._ops[i], round(scores[i], 4 if semantic else 3)) for i in ranked[:limit]]

    def _fuse(self, query: str, bm25: dict[int, float], allowed: list[int]) -> dict[int, float]:
        """Reciprocal-rank fusion of BM25 (matching ops only) and cosine similarity (all allowed ops)."""
        assert self._embedder is not None
        sims = self._matrix[allowed] @ self._embedder.encode([query])[0]
        fused: dict[int, float] = defaultdict(float)
        for rank, j in enumerate(sorted(range(len(allowed)), key=lambda j: -float(sims[j]))):
            fused[allowed[j]] = 1.0 / (RRF_K + rank + 1)
        for rank, i in enumerate(sorted(bm25, key=lambda i: (-bm25[i], i))):
            fused[i] += 1.0 / (RRF_K + rank + 1)
        return fused

    def _filter(self, tag: str | None, method: str | None, path_prefix: str | None) -> list[int]:
        out = []
        tag_l = tag.lower() if tag else None
        m = method.lower() if method else None
        for i, op in enumerate(self._ops):
            if (
                tag_l
                and not any(t.lower() == tag_l or snake(t) == snake(tag_l) for t in op.tags)
                and op.group != snake(tag_l)
            ):
                continue
            if m and op.method != m:
                continue
            if path_prefix and not op.path.startswith(path_prefix):
                continue
            out.append(i)
        return out

    def suggest(self, query: str, n: int = 5) -> list[str]:
        """Close vocabulary words and the biggest tags, for a query that matched nothing."""
        vocab = list(self._idf)
        words: list[str] = []
        for w in _WORD.findall(query):
            words += difflib.get_close_matches(_stem(w.lower()), vocab, n=2, cutoff=0.7)
        tags = Counter(t for op in self._ops for t in op.tags[:1]).most_common(n)
        return list(dict.fromkeys(words))[:n] + [f"tag:{t}" for t, _ in tags]
