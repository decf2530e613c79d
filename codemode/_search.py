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

# User words -> words APIs use. Keys and values are matched after stemming.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "remove": ("delete",), "erase": ("delete",), "destroy": ("delete",), "drop": ("delete",), "rid": ("delete",),
    "kill": ("delete", "stop", "cancel", "terminate"), "wipe": ("delete", "purge"), "purge": ("delete", "cache"),
    "make": ("create",), "add": ("create", "post"), "new": ("create",), "register": ("create",), "spin": ("create",),
    "open": ("create",), "set": ("update", "put"), "change": ("update", "edit"), "modify": ("update",),
    "edit": ("update",), "rename": ("update", "name"), "tweak": ("update",), "adjust": ("update",),
    "show": ("get", "list"), "see": ("get", "list"), "view": ("get",), "fetch": ("get",), "read": ("get",),
    "find": ("search", "list", "get"), "look": ("get", "search"), "lookup": ("get", "search"),
    "check": ("get", "status"), "all": ("list",), "every": ("list",), "which": ("list",), "what": ("get", "list"),
    "who": ("user", "member", "list"), "people": ("user", "member"), "person": ("user",),
    "teammate": ("member", "collaborator"), "colleague": ("member", "collaborator"), "invite": ("invitation", "member", "collaborator"),
    "upload": ("file", "create", "upload"), "download": ("get", "content", "file"), "save": ("create", "update"),
    "send": ("create", "message", "post"), "text": ("message", "sms"), "sms": ("message",), "call": ("call",),
    "phone": ("number", "phone"), "buy": ("create", "purchase", "incoming"), "purchase": ("create", "buy"),
    "cancel": ("cancel", "delete"), "stop": ("stop", "cancel", "delete"), "start": ("create", "start", "run"),
    "launch": ("create", "start", "deploy"), "kick": ("create", "trigger", "start"), "trigger": ("create", "dispatch", "run"),
    "run": ("run", "execute", "create"), "restart": ("restart", "reboot"), "reboot": ("restart", "reboot"),
    "rerun": ("rerun", "retry"), "retry": ("rerun", "retry"), "undo": ("restore", "rollback", "revert"),
    "revert": ("rollback", "restore"), "rollback": ("rollback", "restore"), "restore": ("restore", "rollback"),
    "refund": ("refund", "return"), "pay": ("payment", "charge"), "bill": ("billing", "invoice"),
    "money": ("billing", "invoice", "payment"), "cost": ("billing", "usage"), "spend": ("billing", "usage", "cost"),
    "repo": ("repository",), "repos": ("repository",), "project": ("project", "repository"),
    "pr": ("pull",), "prs": ("pull",), "ticket": ("issue",), "bug": ("issue",), "comment": ("comment",),
    "private": ("visibility", "update"), "public": ("visibility",), "star": ("star", "starred"),
    "merge": ("merge",), "branch": ("branch", "ref"), "tag": ("tag", "release"), "commit": ("commit",),
    "site": ("site", "zone"), "domain": ("domain", "zone", "dns"), "website": ("site", "zone"), "ip": ("ip", "address"),
    "address": ("ip", "address"), "point": ("dns", "record"), "record": ("record", "dns"), "dns": ("dns", "record"),
    "cert": ("certificate", "ssl"), "ssl": ("certificate", "ssl", "tls"), "https": ("ssl", "certificate", "tls"),
    "firewall": ("firewall", "waf", "rule"), "block": ("block", "firewall", "rule", "access"), "ban": ("block", "rule"),
    "cache": ("cache", "purge"), "secret": ("secret", "key", "token"), "password": ("password", "credential", "secret"),
    "key": ("key", "token"), "token": ("token", "key"), "login": ("auth", "token", "session"),
    "log": ("log", "logs"), "logs": ("log", "logs"), "history": ("history", "log", "event"), "audit": ("audit", "log"),
    "machine": ("droplet", "server", "instance", "node"), "vm": ("droplet", "server", "instance"),
    "server": ("server", "droplet", "instance"), "box": ("droplet", "server"), "container": ("container", "pod"),
    "database": ("database", "db"), "db": ("database",), "bucket": ("bucket", "storage"), "storage": ("storage", "bucket", "volume"),
    "disk": ("volume", "storage"), "snapshot": ("snapshot", "backup"), "backup": ("backup", "snapshot"),
    "deploy": ("deploy", "deployment", "build"), "ship": ("deploy", "release"), "release": ("release", "deploy"),
    "scale": ("scale", "replica", "resize"), "resize": ("resize", "scale"), "size": ("size", "resize"),
    "chat": ("chat", "completion", "message"), "ask": ("completion", "chat", "response"), "answer": ("completion", "response"),
    "picture": ("image",), "photo": ("image",), "image": ("image",), "speech": ("audio", "speech"), "voice": ("audio", "speech"),
    "transcribe": ("transcription", "audio"), "translate": ("translation",), "embed": ("embedding",), "vector": ("embedding", "vector"),
    "train": ("fine", "tune", "job"), "finetune": ("fine", "tune"), "model": ("model",), "moderate": ("moderation",),
    "folder": ("folder", "directory"), "directory": ("folder", "directory"), "share": ("share", "shared", "link", "collaboration"),
    "link": ("link", "url"), "notebook": ("notebook", "content", "session"), "kernel": ("kernel",), "file": ("file", "content"),
    "pet": ("pet",), "animal": ("pet",), "dog": ("pet",), "cat": ("pet",), "order": ("order",), "stock": ("inventory",),
    "inventory": ("inventory",), "sprint": ("sprint",), "board": ("board",), "epic": ("epic",), "backlog": ("backlog",),
    "pod": ("pod",), "namespace": ("namespace",), "node": ("node",), "cluster": ("cluster",), "service": ("service",),
    "job": ("job",), "cron": ("cronjob", "cron"), "schedul": ("cron", "schedule"), "config": ("configmap", "config", "setting"),
    "setting": ("setting", "config"), "settings": ("setting", "config"), "permission": ("permission", "role", "access"),
    "role": ("role", "permission"), "access": ("access", "permission"), "team": ("team", "member"),
    "user": ("user", "member", "account"), "account": ("account",), "profile": ("user", "profile"), "me": ("user", "authenticated"),
    "my": ("authenticated", "user"), "status": ("status",), "health": ("health", "status", "heartbeat"),
    "uptime": ("health", "heartbeat"), "alive": ("heartbeat", "health"), "echo": ("anything",), "ip_address": ("ip",),
    "slow": ("delay",), "wait": ("delay",), "random": ("bytes", "uuid"), "cookie": ("cookie",), "redirect": ("redirect",),
    "webhook": ("hook", "webhook"), "hook": ("hook", "webhook"), "notify": ("notification", "hook"), "email": ("email", "mail"),
    "form": ("form",), "function": ("function", "worker", "script"), "worker": ("worker", "script"), "script": ("script", "worker"),
    "env": ("environment", "variable", "env"), "variable": ("variable", "env"), "record_": ("record",),
    "collection": ("collection",), "group": ("group",), "history_": ("history",),
}  # fmt: skip
# Query words that signal an intent; the intent favours these HTTP methods.
INTENTS: dict[str, tuple[str, ...]] = {
    "create": ("post", "put"), "add": ("post", "put"), "make": ("post",), "new": ("post",), "start": ("post",),
    "send": ("post",), "upload": ("post", "put"), "invite": ("post", "put"), "launch": ("post",), "kick": ("post",),
    "trigger": ("post",), "run": ("post",), "buy": ("post",), "register": ("post",), "spin": ("post",),
    "delete": ("delete",), "remove": ("delete",), "erase": ("delete",), "destroy": ("delete",), "drop": ("delete",),
    "rid": ("delete",), "kill": ("delete", "post"), "wipe": ("delete", "post"), "revoke": ("delete", "post"),
    "update": ("patch", "put"), "change": ("patch", "put"), "edit": ("patch", "put"), "rename": ("patch", "put"),
    "modify": ("patch", "put"), "set": ("put", "patch"), "turn": ("patch", "put"), "enable": ("patch", "put", "post"),
    "disable": ("patch", "put", "delete"), "make_private": ("patch",), "replace": ("put",),
    "list": ("get",), "show": ("get",), "get": ("get",), "see": ("get",), "view": ("get",), "fetch": ("get",),
    "find": ("get",), "which": ("get",), "what": ("get",), "who": ("get",), "how": ("get",), "check": ("get",),
    "download": ("get",), "read": ("get",), "look": ("get",), "count": ("get",),
}  # fmt: skip
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
            if tag_l and not any(t.lower() == tag_l or snake(t) == snake(tag_l) for t in op.tags) and op.group != snake(tag_l):
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
