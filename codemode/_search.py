"""Ranked search over the operations of an :class:`~codemode._ir.ApiSpec`.

Two rankers:

* **BM25F** over weighted fields (names, summary, path words, tags, description,
  parameter names, schema names, and at low weights request-body property names and
  descriptions, and the enum values of parameters and properties) with Snowball stemming,
  plus two pieces of policy kept as data (:mod:`codemode._vocabulary`): synonyms from how
  users speak to how APIs are written, and task verbs that favour HTTP methods. Built in
  the constructor (milliseconds to a few hundred for the biggest specs); always there.
* **Semantic**: cosine similarity of sentence embeddings (:mod:`codemode._embed`), when
  the optional model is installed. :meth:`SearchIndex.load_embeddings` reads them from
  the disk cache or computes them once per spec; until then search is BM25 alone and
  :attr:`SearchIndex.semantic_state` says why.

With both, scores are fused: ``0.9 × min-max-normalised cosine + 0.1 × BM25 / best BM25``.
A query that matches nothing returns no hits: with BM25 alone when none of its words is
in the spec's vocabulary; with the semantic ranker also when the best cosine similarity
is below a threshold calibrated on nonsense and off-topic queries (``bench/search_eval.py
--calibrate``).
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

from ._concepts import concept_matcher
from ._ir import ApiSpec, Operation
from ._naming import snake
from ._optext import body_text, values_text
from ._progress import ProgressEvent, Reporter, step
from ._references import References
from ._render import referenced_names
from ._vocabulary import INTENTS, SYNONYMS

if TYPE_CHECKING:
    from ._embed import Embedder

__all__ = ["Group", "Hit", "SearchIndex", "SemanticState", "tokenize"]

# Field weights for BM25F.
FIELD_WEIGHTS: dict[str, float] = {
    "name": 3.0, "summary": 3.0, "path": 2.0, "tags": 1.5, "schemas": 1.0, "params": 0.6, "description": 0.8,
    "body": 0.35, "values": 0.6,
}  # fmt: skip
K1, B = 1.2, 0.75
SYNONYM_WEIGHT = 0.45
CONCEPT_WEIGHT = 0.45  # query weight of a concept gloss's words (codemode._concepts)
METHOD_BOOST = 0.6  # multiplier on the score share when the query's intent matches the method
# Multiplier when every word of the operation's resource (its path's last literal segment) is in
# the query: "create issue" means POST .../issues, not POST .../issues/{n}/reactions, though both
# mention issues. BM25 recall@5 0.78 -> 0.84 on the tuning set (0.3: 0.82, 0.8: 0.85).
RESOURCE_BOOST = 0.5
FUSION_COSINE = 0.9  # weight of the min-max-normalised cosine similarity in the fused score
FUSION_BM25 = 0.1  # weight of BM25 / best BM25
INDEX_PROGRESS_EVERY = 100  # operations indexed between two progress events
MAX_FILTER_CHARS = 200  # a longer tag names no tag
MAX_PATH_CHARS = 2000  # nor does a longer path_prefix start any path
MAX_WORD = 30  # a longer run of letters is noise, not a word
MAX_QUERY_CHARS = 2000  # longer queries are cut (a 10 kB paste costs what a paragraph costs)
UNTAGGED = "(untagged)"  # the table of contents' name for the operations without a tag (tag= accepts it)
log = logging.getLogger("codemode.search")

STOPWORDS = frozenset(
    "a an the of for to in on at by with from and or is are be this that these those it its my our your me i we "
    "you please can could would should will want need some any into onto via as up out about over all".split()
) - {"all", "up", "out"}

_WORD = re.compile(r"[A-Za-z][a-z]+|[A-Z]+(?![a-z])|\d+")
_stemmer = snowballstemmer.stemmer("english")

SemanticState = Literal["ready", "building", "off", "failed"]


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


def tokenize(text: str) -> list[str]:
    """Stemmed words, without stopwords and without "words" too long to be words."""
    return [_stem(w.lower()) for w in _WORD.findall(text) if w.lower() not in STOPWORDS and len(w) <= MAX_WORD]


_COMPOUND = re.compile(r"\b(?=[A-Za-z0-9]*[A-Za-z])(?=[A-Za-z0-9]*\d)[A-Za-z0-9]{3,}\b")  # k8s, e164, ec2


def _last_literal(path: str) -> str:
    """The last path segment that is not a parameter: the resource an operation acts on."""
    return next((s for s in reversed(path.split("/")) if s and not s.startswith("{")), "")


def _weak(term: str) -> bool:
    """A query word that is no evidence of a match on its own: a number or a single character."""
    return len(term) < 2 or term.isdigit()


@dataclass(frozen=True, slots=True)
class Hit:
    operation: Operation
    score: float


@dataclass(frozen=True, slots=True)
class Group:
    """One entry of the table of contents: a tag (or, for untagged specs, a group) and its operations."""

    name: str
    description: str
    operations: tuple[Operation, ...]


class SearchIndex:
    """Ranked search over ``spec``. Construction builds BM25 only (milliseconds).

    ``embedder``: ``"auto"`` uses the installed embedding model if there is one,
    ``None`` disables semantic ranking, or pass any :class:`~codemode._embed.Embedder`.
    Semantic ranking starts once :meth:`load_embeddings` has run; a build reports to
    ``progress``. ``no_match_cosine`` overrides the embedder's calibrated threshold.
    """

    def __init__(
        self,
        spec: ApiSpec,
        *,
        embedder: Embedder | Literal["auto"] | None = "auto",
        cache_dir: Path | None = None,
        progress: Reporter | None = None,
        no_match_cosine: float | None = None,
    ) -> None:
        self.spec = spec
        self._ops = spec.operations
        self._embedder_arg = embedder
        self._embedder: Embedder | None = None
        self._matrix: Any = None  # numpy (n, d) once loaded
        self._cache_dir = cache_dir
        self._progress = progress
        self._no_match_cosine = no_match_cosine
        self._embed_lock = threading.Lock()
        self._state: SemanticState = "off" if embedder is None else "building"
        if embedder == "auto":
            from ._embed import semantic_disabled, semantic_installed

            if semantic_disabled() or not semantic_installed():  # no "being prepared" note for a model never coming
                self._embedder_arg, self._state = None, "off"
        self._build_event: ProgressEvent | None = None
        self._tf: list[dict[str, float]] = []
        self._len: list[float] = []
        df: Counter[str] = Counter()
        with step(progress, f"indexing {spec.title} for keyword search", total=len(self._ops)) as indexing:
            for k, op in enumerate(self._ops, start=1):
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
                if k % INDEX_PROGRESS_EVERY == 0:
                    indexing.advance(INDEX_PROGRESS_EVERY)
        n = max(len(self._ops), 1)
        self._avg = (sum(self._len) / n) or 1.0
        self._idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
        self._postings: dict[str, list[int]] = defaultdict(list)
        for i, tf in enumerate(self._tf):
            for t in tf:
                self._postings[t].append(i)
        self._resource = [frozenset(tokenize(_last_literal(op.path))) for op in self._ops]
        self._syn = {_stem(k): tuple(_stem(v) for v in vs) for k, vs in SYNONYMS.items()}
        self._intent = {_stem(k): v for k, v in INTENTS.items()}
        self._surface: dict[str, str] = {}  # stem -> the shortest word seen in names and summaries
        for op in self._ops:
            for w in _WORD.findall(f"{op.summary} {op.name.replace('_', ' ')}"):
                low = w.lower()
                stem = _stem(low)
                if len(low) <= MAX_WORD and (stem not in self._surface or len(low) < len(self._surface[stem])):
                    self._surface[stem] = low
        self._every = list(range(len(self._ops)))
        # What a tag= filter matches per operation: its tags (as written, lower case, snake case) and its group,
        # and for an operation without tags the name the table of contents lists it under.
        self._tag_keys = [
            {op.group, *(t.lower() for t in op.tags), *(snake(t) for t in op.tags), *(() if op.tags else (UNTAGGED,))}
            for op in self._ops
        ]
        self._by_path: dict[str, list[Operation]] = defaultdict(list)
        for op in self._ops:
            self._by_path[op.path].append(op)
        self._concepts = concept_matcher(_stem)
        self._references = References(self._ops)
        self._gloss_known: dict[str, bool] = {}

    # -- the semantic ranker ------------------------------------------------------------------
    @property
    def semantic(self) -> bool:
        """Whether the embedding ranker is in use (its operation embeddings are loaded)."""
        return self._matrix is not None

    @property
    def embedder(self) -> Embedder | None:
        """The embedding model in use, once the embeddings are loaded."""
        return self._embedder

    @property
    def semantic_state(self) -> SemanticState:
        """``ready``; ``building`` (not loaded yet); ``off`` (not installed or turned off); ``failed``."""
        return self._state

    @property
    def semantic_progress(self) -> float | None:
        """The fraction of the embedding build done, while one runs."""
        event = self._build_event
        return event.fraction if event is not None and not event.finished else None

    def emit(self, event: ProgressEvent) -> None:
        """Progress of our own embedding build: remembered, and passed on to ``progress``."""
        self._build_event = event
        if self._progress is not None:
            self._progress.emit(event)

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
                    self._embedder_arg, self._state = None, "off"
                    return False
                matrix = operation_matrix(self.spec, emb, self._cache_dir, progress=self)
                prepare = getattr(emb, "prepare", None)
                if callable(prepare):
                    prepare()  # the query session, so the first query does not pay for it
            except Exception as exc:  # noqa: BLE001 - the optional ranker must never break search
                log.warning("semantic search disabled: %s: %s", type(exc).__name__, exc)
                self._embedder_arg, self._state = None, "failed"
                return False
            self._embedder, self._matrix, self._state = emb, matrix, "ready"
            return True

    @property
    def no_match_cosine(self) -> float:
        if self._no_match_cosine is not None:
            return self._no_match_cosine
        return float(getattr(self._embedder, "no_match_cosine", -1.0))

    # -- BM25 -----------------------------------------------------------------------------------
    def _fields(self, op: Operation) -> Iterable[tuple[str, str]]:
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
        yield "body", body_text(self.spec, op)
        yield "values", values_text(self.spec, op)

    def _score(self, terms: dict[str, float]) -> dict[int, float]:
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

    def glosses(self, query: str) -> list[str]:
        """The API words for the concepts ``query`` names (:mod:`codemode._concepts`) that this spec uses.

        A gloss counts only when every one of its words occurs in the spec: "DNS record" is
        added for "a TXT entry" in an API with DNS records, and nowhere else.
        """
        out = []
        for gloss in self._concepts.glosses(query[:MAX_QUERY_CHARS]):
            known = self._gloss_known.get(gloss)
            if known is None:
                stems = tokenize(gloss)
                known = self._gloss_known[gloss] = bool(stems) and all(t in self._idf for t in stems)
            if known:
                out.append(gloss)
        return out

    def semantic_query(self, query: str) -> str:
        """The text embedded for ``query``: the query, then the glosses of the concepts it names."""
        query = query[:MAX_QUERY_CHARS]
        glosses = self.glosses(query)
        return f"{query} ({'; '.join(glosses)})" if glosses else query

    def query_terms(self, query: str) -> tuple[dict[str, float], set[str]]:
        terms: dict[str, float] = {}
        methods: set[str] = set()
        for tok in tokenize(query[:MAX_QUERY_CHARS]):
            terms[tok] = max(terms.get(tok, 0.0), 1.0)
            for syn in self._syn.get(tok, ()):
                if syn != tok:
                    terms[syn] = max(terms.get(syn, 0.0), SYNONYM_WEIGHT)
            methods.update(self._intent.get(tok, ()))
        for gloss in self.glosses(query):
            for tok in tokenize(gloss):
                terms[tok] = max(terms.get(tok, 0.0), CONCEPT_WEIGHT)
        return terms, methods

    def _evidence(self, query: str, terms: dict[str, float]) -> bool:
        """Whether the keyword index may answer: numbers and single letters alone are no evidence
        ("xyzzyplugh 42", a pasted escape code "\x1b[2J" -> "2", "j"), unless they come from a word
        of letters and digits at least 3 long ("k8s" -> "8", "e164" -> "164")."""
        if any(t in self._idf and not _weak(t) for t in terms):
            return True
        return any(any(t in self._idf for t in tokenize(word)) for word in _COMPOUND.findall(query[:MAX_QUERY_CHARS]))

    def known_words(self, query: str) -> list[str]:
        """The query's words (stemmed) that occur in this spec's index."""
        return [t for t in dict.fromkeys(tokenize(query[:MAX_QUERY_CHARS])) if t in self._idf]

    # -- search ---------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        tag: str | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
        limit: int = 8,
    ) -> list[Hit]:
        """Ranked hits; ``[]`` when nothing matches. A filter alone lists its operations in spec order.

        Operations the query names outright (``api.repos.update``, an operationId, ``METHOD /path``,
        a path or URL: :mod:`codemode._references`) come first.
        """
        query = query[:MAX_QUERY_CHARS]
        allowed = self._filter(tag, method, path_prefix)
        if not query.strip():
            return [Hit(self._ops[i], 0.0) for i in allowed][:limit] if (tag or method or path_prefix) else []
        hits = self._ranked(query, allowed, limit)
        named = self._references.find(query)
        if named:
            allowed_set = set(allowed)
            first = [Hit(self._ops[i], 1.0 + (hits[0].score if hits else 0.0)) for i in named if i in allowed_set]
            keys = {h.operation.key for h in first}
            hits = (first + [h for h in hits if h.operation.key not in keys])[:limit]
        return hits

    def references(self, query: str) -> list[Operation]:
        """The operations ``query`` names outright (:mod:`codemode._references`), most specific first."""
        return [self._ops[i] for i in self._references.find(query[:MAX_QUERY_CHARS])]

    def path_operations(self, path: str, method: str | None = None) -> list[Operation]:
        """The operations whose path template matches ``path`` (a template or a concrete path), most literal first."""
        return [self._ops[i] for i in self._references.match_path(path[:MAX_QUERY_CHARS], method)]

    def _ranked(self, query: str, allowed: list[int], limit: int) -> list[Hit]:
        terms, methods = self.query_terms(query)
        scores = self._score(terms) if self._evidence(query, terms) else {}
        if methods:
            for i in scores:
                if self._ops[i].method in methods:
                    scores[i] *= 1 + METHOD_BOOST
        for i in scores:
            if self._resource[i] and self._resource[i] <= terms.keys():
                scores[i] *= 1 + RESOURCE_BOOST
        if len(allowed) < len(self._ops):
            allowed_set = set(allowed)
            scores = {i: s for i, s in scores.items() if i in allowed_set}
        if self._matrix is not None and allowed:
            return self._fused_top(query, terms, scores, allowed, limit)
        ranked = sorted(scores, key=lambda i: (-scores[i], i))
        return [Hit(self._ops[i], round(scores[i], 4)) for i in ranked[:limit]]

    def cosine(self, query: str, indices: list[int] | None = None) -> Any:
        """Cosine similarity of ``query`` with the operations (all, or ``indices``); needs the embeddings."""
        assert self._embedder is not None and self._matrix is not None
        import numpy as np

        q = self._embedder.embed_query(self.semantic_query(query))
        # einsum's own loop, not BLAS: a matrix-vector product this small takes 0.15 ms on one
        # core, while waking BLAS's thread pool right after the encoder's threads took 5-10 ms
        # on a busy 2-core machine (measured on Cloudflare's 1,533 x 384 matrix).
        return np.einsum("ij,j->i", self._matrix if indices is None else self._matrix[indices], q)

    def _fused_top(
        self, query: str, terms: dict[str, float], bm25: dict[int, float], allowed: list[int], limit: int
    ) -> list[Hit]:
        """0.9 × min-max-normalised cosine + 0.1 × BM25 / best BM25 over the allowed operations, best first.

        Nothing when BM25 matched no word and the query has no content word (only stopwords,
        symbols, emoji) or its best cosine is under the no-match threshold.
        """
        import numpy as np

        every = len(allowed) == len(self._ops)
        sims = self.cosine(query, None if every else allowed)
        top, low = float(sims.max()), float(sims.min())
        if not bm25 and (not terms or top < self.no_match_cosine):
            return []
        fused = (sims - low) * (FUSION_COSINE / ((top - low) or 1.0))
        if bm25:
            pos = {i: j for j, i in enumerate(allowed)} if not every else None
            best = max(bm25.values()) or 1.0
            for i, s in bm25.items():
                fused[i if pos is None else pos[i]] += FUSION_BM25 * s / best
        k = min(limit, len(allowed))
        part = np.argpartition(-fused, k - 1)[:k] if k < len(allowed) else np.arange(len(allowed))
        order = sorted(part.tolist(), key=lambda j: (-float(fused[j]), allowed[j]))
        return [Hit(self._ops[allowed[j]], round(float(fused[j]), 4)) for j in order]

    def closest(self, query: str, n: int = 3) -> list[Operation]:
        """The operations nearest in meaning (semantic ranker only), whatever the threshold says."""
        if self._matrix is None or not query.strip():
            return []
        sims = self.cosine(query[:MAX_QUERY_CHARS])
        order = sorted(range(len(sims)), key=lambda i: -float(sims[i]))[:n]
        return [self._ops[i] for i in order]

    def _filter(self, tag: str | None, method: str | None, path_prefix: str | None) -> list[int]:
        if not (tag or method or path_prefix):
            return self._every
        if (tag is not None and len(tag) > MAX_FILTER_CHARS) or (path_prefix and len(path_prefix) > MAX_PATH_CHARS):
            return []  # no tag or path is that long
        out = []
        tag_l = tag.lower() if tag else None
        tag_snake = snake(tag) if tag else None
        m = method.lower() if method else None
        for i, op in enumerate(self._ops):
            if tag_l and tag_l not in self._tag_keys[i] and tag_snake not in self._tag_keys[i]:
                continue
            if m and op.method != m:
                continue
            if path_prefix and not op.path.startswith(path_prefix):
                continue
            out.append(i)
        return out

    # -- browsing, siblings, suggestions ------------------------------------------------------
    def siblings(self, op: Operation) -> list[Operation]:
        """The other operations on the same path (the GET/PUT/PATCH/DELETE of one resource)."""
        return [o for o in self._by_path.get(op.path, ()) if o is not op]

    def groups(self) -> list[Group]:
        """The table of contents: tags with their operations (or groups, for a spec without tags)."""
        by_tag: dict[str, list[Operation]] = defaultdict(list)
        tagged = any(op.tags for op in self._ops)
        for op in self._ops:
            by_tag[(op.tags[0] if op.tags else UNTAGGED) if tagged else op.group].append(op)
        desc = self.spec.tag_descriptions
        return [Group(name, desc.get(name, ""), tuple(ops)) for name, ops in by_tag.items()]

    def has_tag(self, tag: str) -> bool:
        return bool(self._filter(tag, None, None))

    def close_tags(self, tag: str, n: int = 5) -> list[str]:
        names = list(dict.fromkeys(t for op in self._ops for t in op.tags)) or list(
            dict.fromkeys(op.group for op in self._ops)
        )
        lowered = {name.lower(): name for name in names}
        wanted = tag.lower()[:MAX_FILTER_CHARS]
        return [lowered[m] for m in difflib.get_close_matches(wanted, list(lowered), n=n, cutoff=0.5)]

    def suggest(self, query: str, n: int = 5) -> list[str]:
        """Words of this API close to the query's, then the biggest tags, for a query that matched nothing."""
        vocab = list(self._surface)
        words: list[str] = []
        for stem in tokenize(query[:MAX_QUERY_CHARS])[:20]:
            words += [self._surface[m] for m in difflib.get_close_matches(stem, vocab, n=2, cutoff=0.75)]
        tags = Counter(t for op in self._ops for t in op.tags[:1]).most_common(n)
        return list(dict.fromkeys(words))[:n] + [f"tag:{t}" for t, _ in tags]
