"""Search quality: recall@1 and recall@5 over bench/search_queries.yaml.

``--ranker bm25|embed|hybrid|all`` (default ``all`` when the optional embedding
model is installed, else ``bm25``); ``-v`` prints the misses of each ranker.
``--queries FILE`` reads another labelled set (e.g. bench/search_heldout.yaml, the
untuned held-out set); ``--check`` only verifies that every label names an
operation of its spec, without running any ranker.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from codemode import load_spec
from codemode._embed import default_embedder
from codemode._search import Hit, SearchIndex

SHARED = ROOT.parent / "shared" / "specs"
TUNING_QUERIES = ROOT / "bench" / "search_queries.yaml"
HELDOUT_QUERIES = ROOT / "bench" / "search_heldout.yaml"


def _embed_only(index: SearchIndex, query: str, limit: int) -> list[Hit]:
    assert index._embedder is not None
    sims = index._matrix @ index._embedder.encode([query])[0]
    top = sorted(range(len(sims)), key=lambda i: -float(sims[i]))[:limit]
    return [Hit(index._ops[i], float(sims[i])) for i in top]


def check_labels(queries: Path = TUNING_QUERIES) -> list[str]:
    """Labels in *queries* that name no operation of their spec (same resolution as evaluate)."""
    data = yaml.safe_load(queries.read_text())
    problems = []
    for key, entry in data["specs"].items():
        known = {op.label for op in load_spec(str(SHARED / entry["file"])).operations}
        for q in entry["queries"]:
            if not q.get("expect"):
                problems.append(f"[{key}] {q['q']!r}: no expect labels")
            unknown = [lab for lab in q.get("expect", []) if lab not in known]
            problems += [f"[{key}] {q['q']!r}: {lab!r} is not an operation" for lab in unknown]
    return problems


def evaluate(ranker: str = "bm25", verbose: bool = False, queries: Path = TUNING_QUERIES) -> list[dict[str, object]]:
    data = yaml.safe_load(queries.read_text())
    rows = []
    for key, entry in data["specs"].items():
        spec = load_spec(str(SHARED / entry["file"]))
        t = time.perf_counter()
        index = SearchIndex(spec, embedder=None if ranker == "bm25" else "auto")
        build_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        if ranker != "bm25" and not index.load_embeddings():
            raise SystemExit(f"--ranker {ranker}: no embedding model installed (pip install codemode-mcp[semantic])")
        embed_ms = (time.perf_counter() - t) * 1000
        r1 = r5 = 0
        lat = []
        by_style: dict[str, list[int]] = {}
        for q in entry["queries"]:
            t = time.perf_counter()
            hits = _embed_only(index, q["q"], 5) if ranker == "embed" else index.search(q["q"], limit=5)
            lat.append((time.perf_counter() - t) * 1000)
            labels = [h.operation.label for h in hits]
            ok1 = bool(labels) and labels[0] in q["expect"]
            ok5 = any(lab in q["expect"] for lab in labels)
            r1 += ok1
            r5 += ok5
            by_style.setdefault(q.get("style", "?"), []).append(ok5)
            if verbose and not ok5:
                print(f"MISS {ranker} [{key}] {q['q']!r} want {q['expect'][0]} got {labels[:3]}")
        n = len(entry["queries"])
        lat.sort()
        rows.append(
            {
                "spec": key,
                "n": n,
                "ops": len(spec.operations),
                "r1": r1 / n,
                "r5": r5 / n,
                "p50_ms": lat[len(lat) // 2],
                "index_ms": build_ms,
                "embed_ms": embed_ms,
                "styles": {k: sum(v) / len(v) for k, v in by_style.items()},
            }
        )
    return rows


def print_table(ranker: str, rows: list[dict[str, object]]) -> None:
    print(f"\n### ranker: {ranker}\n")
    print("| spec | ops | queries | recall@1 | recall@5 | p50 ms | BM25 build ms | embeddings ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    tot = sum(r["n"] for r in rows)  # type: ignore[misc]
    for r in rows:
        print(
            f"| {r['spec']} | {r['ops']} | {r['n']} | {r['r1']:.2f} | {r['r5']:.2f} | {r['p50_ms']:.2f} "
            f"| {r['index_ms']:.0f} | {r['embed_ms']:.0f} |"
        )
    w1 = sum(r["r1"] * r["n"] for r in rows) / tot  # type: ignore[operator]
    w5 = sum(r["r5"] * r["n"] for r in rows) / tot  # type: ignore[operator]
    print(f"| **overall** | | {tot} | {w1:.2f} | {w5:.2f} | | | |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranker", choices=["bm25", "embed", "hybrid", "all"])
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--queries", type=Path, default=TUNING_QUERIES, help="labelled query file (YAML)")
    ap.add_argument("--check", action="store_true", help="only check that every label resolves; run no ranker")
    args = ap.parse_args()
    if args.check:
        bad = check_labels(args.queries)
        print("\n".join(bad) or f"{args.queries.name}: every label resolves")
        raise SystemExit(1 if bad else 0)
    ranker = args.ranker or ("all" if default_embedder() is not None else "bm25")
    for name in ["bm25", "embed", "hybrid"] if ranker == "all" else [ranker]:
        print_table(name, evaluate(name, verbose=args.verbose, queries=args.queries))
