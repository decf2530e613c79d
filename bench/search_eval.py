"""Search quality: recall@1, recall@5 and "shown in the answer" per spec, plus query latency.

``--ranker bm25|embed|hybrid|all`` (default ``all`` when the optional embedding model
is installed, else ``bm25``). ``--queries FILE`` reads another labelled set:
``bench/search_heldout.yaml`` is the untuned held-out set (never tune on it; ``--heldout``
is a shortcut). ``--check`` only verifies that every label names an operation of its spec.
``-v`` prints the misses (not allowed with the held-out set: reading its misses is tuning).
``--calibrate`` prints the best cosine similarity of real queries beside that of
nonsense and off-topic ones, which is what the no-match threshold is set from.

The table is the one ``codemode eval-search SPEC --queries FILE`` prints, from the same
code (:mod:`codemode._evaluate`). "recall@5" is the share of queries with a correct
operation among the top 5 hits; "shown in answer" the share whose answer names one
anywhere (a hit within the token budget, or an "also on this path" sibling).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from codemode import load_spec
from codemode._embed import default_embedder
from codemode._evaluate import Ranker, SpecResult, evaluate, load_queries, markdown_table, resolve_labels
from codemode._search import SearchIndex

SHARED = ROOT.parent / "shared" / "specs"
TUNING_QUERIES = ROOT / "bench" / "search_queries.yaml"
HELDOUT_QUERIES = ROOT / "bench" / "search_heldout.yaml"

# Queries that should match nothing, for calibrating the no-match threshold: nonsense and
# off-topic phrasings (none of these is a labelled query).
NONSENSE = [
    "xyzzyplugh", "asdf qwer zxcv", "qqqq", "blorptangle frobnicate", "lorem ipsum dolor sit amet",
    "bake a chocolate cake", "what is the capital of france", "recipe for banana bread",
    "tie my shoelaces", "play a jazz song", "how tall is mount everest", "write a haiku about autumn",
    "the quick brown fox jumps over the lazy dog", "1234567890", "!!!???", "ñandú über straße",
    "feed the goldfish", "translate hello into klingon", "who won the 1998 world cup", "knit a scarf",
]  # fmt: skip


def check_labels(queries: Path = TUNING_QUERIES) -> list[str]:
    """Labels in *queries* that name no operation of their spec (same resolution as evaluate)."""
    import yaml

    problems = []
    for key, entry in yaml.safe_load(queries.read_text())["specs"].items():
        spec = load_spec(str(SHARED / entry["file"]))
        for q in entry["queries"]:
            if not q.get("expect"):
                problems.append(f"[{key}] {q['q']!r}: no expect labels")
            _, unknown = resolve_labels(spec, q.get("expect") or [])
            problems += [f"[{key}] {q['q']!r}: {lab!r} is not an operation" for lab in unknown]
    return problems


def evaluate_file(ranker: Ranker, queries: Path = TUNING_QUERIES) -> list[SpecResult]:
    results = []
    for qs in load_queries(queries):
        spec = load_spec(str(SHARED / (qs.file or "")))
        results.append(evaluate(spec, qs, ranker))
    return results


def rows(results: list[SpecResult]) -> list[dict[str, Any]]:
    """Plain dicts (for bench/run.py)."""
    return [
        {"spec": r.key, "n": r.n, "ops": r.ops, "r1": r.r1, "r5": r.r5, "shown": r.r_shown,
         "p50_ms": r.pct(0.5), "p99_ms": r.pct(0.99), "embed_s": r.embed_s}
        for r in results
    ]  # fmt: skip


def comparison(queries: Path, rankers: list[Ranker]) -> str:
    """One table per query file: each ranker's recall@1 / @5 side by side, then the answer and latency."""
    results = {r: evaluate_file(r, queries) for r in rankers}
    last = rankers[-1]
    head = "| spec | ops | queries | " + " | ".join(f"{r} recall@1 / @5" for r in rankers)
    head += f" | {last}: shown in answer | {last}: p50 / p99 ms |"
    lines = [head, "|---|---:|---:|" + "---:|" * (len(rankers) + 2)]
    for i, row in enumerate(results[rankers[0]]):
        cells = " | ".join(f"{results[r][i].r1:.2f} / {results[r][i].r5:.2f}" for r in rankers)
        lr = results[last][i]
        lat = f"{lr.pct(0.5):.1f} / {lr.pct(0.99):.1f}"
        lines.append(f"| {row.key} | {row.ops:,} | {row.n} | {cells} | {lr.r_shown:.2f} | {lat} |")
    total = sum(r.n for r in results[rankers[0]])
    cells = " | ".join(
        f"**{sum(x.top1 for x in results[r]) / total:.2f} / {sum(x.top5 for x in results[r]) / total:.2f}**"
        for r in rankers
    )
    shown = sum(x.shown for x in results[last]) / total
    lines.append(f"| **overall** | | {total} | {cells} | **{shown:.2f}** | |")
    return "\n".join(lines)


def section() -> str:
    """Both query sets, for bench/run.py."""
    rankers: list[Ranker] = ["bm25", "hybrid"] if default_embedder() is not None else ["bm25"]
    out = []
    for title, path in (("Tuning set", TUNING_QUERIES), ("Held-out set (never tuned on)", HELDOUT_QUERIES)):
        out.append(f"**{title}** (`bench/{path.name}`)\n\n{comparison(path, rankers)}")
    if len(rankers) == 1:
        out.append("_hybrid not measured: the optional semantic model is not installed._")
    return "\n\n".join(out)


def calibrate(queries: Path = TUNING_QUERIES) -> str:
    """Where the no-match threshold sits: the best cosine of queries that share no word with the spec.

    A query is "no match" when none of its words occurs in the spec (BM25 finds nothing) and
    its best cosine similarity is under the threshold; this prints, per spec, how real and
    nonsense queries fall on both tests.
    """
    import numpy as np

    lines = [
        "| spec | real: with no spec word | real: best cosine of those (min) | nonsense: with no spec word "
        "| nonsense: best cosine of those (max / median) |",
        "|---|---:|---:|---:|---:|",
    ]
    real_gap: list[float] = []
    junk_gap: list[float] = []
    for qs in load_queries(queries):
        spec = load_spec(str(SHARED / (qs.file or "")))
        index = SearchIndex(spec)
        if not index.load_embeddings():
            raise SystemExit("--calibrate needs the semantic model")
        real = [float(index.cosine(q.q).max()) for q in qs.queries if not index.known_words(q.q)]
        junk = [float(index.cosine(q).max()) for q in NONSENSE if not index.known_words(q)]
        real_gap += real
        junk_gap += junk
        lines.append(
            f"| {qs.key} | {len(real)}/{len(qs.queries)} | {min(real, default=float('nan')):.3f} "
            f"| {len(junk)}/{len(NONSENSE)} | {max(junk, default=float('nan')):.3f} / "
            f"{float(np.median(junk)) if junk else float('nan'):.3f} |"
        )
    lines.append(
        f"| **all** | {len(real_gap)} | {min(real_gap, default=float('nan')):.3f} | {len(junk_gap)} "
        f"| {max(junk_gap, default=float('nan')):.3f} / {float(np.median(junk_gap)) if junk_gap else 0:.3f} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranker", choices=["bm25", "embed", "hybrid", "all"])
    ap.add_argument("-v", "--verbose", action="store_true", help="print each ranker's misses (tuning set only)")
    ap.add_argument("--queries", type=Path, default=TUNING_QUERIES, help="labelled query file (YAML)")
    ap.add_argument("--heldout", action="store_true", help="the untuned held-out set (bench/search_heldout.yaml)")
    ap.add_argument("--check", action="store_true", help="only check that every label resolves; run no ranker")
    ap.add_argument("--calibrate", action="store_true", help="best-cosine figures behind the no-match threshold")
    args = ap.parse_args(argv)
    queries = HELDOUT_QUERIES if args.heldout else args.queries
    if args.check:
        bad = check_labels(queries)
        print("\n".join(bad) or f"{queries.name}: every label resolves")
        return 1 if bad else 0
    if args.calibrate:
        print(calibrate(queries))
        return 0
    if args.verbose and queries.resolve() == HELDOUT_QUERIES.resolve():
        raise SystemExit("-v is refused on the held-out set: reading its misses would be tuning on it")
    ranker = args.ranker or ("all" if default_embedder() is not None else "bm25")
    names: list[Ranker] = ["bm25", "embed", "hybrid"] if ranker == "all" else [ranker]
    for name in names:
        results = evaluate_file(name, queries)
        print("\n" + markdown_table(results, f"ranker: {name} ({queries.name})"))
        if args.verbose:
            for r in results:
                for q, want, got in r.misses:
                    print(f"MISS {name} [{r.key}] {q!r} want {want[0]} got {got}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
