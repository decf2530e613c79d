"""``codemode eval-search SPEC --queries FILE.yaml``: measure search on your own phrasings.

Prints recall@1, recall@5, the share of queries whose answer names a correct operation
anywhere ("shown in answer") and query latency: the table ``bench/search_eval.py`` prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import UsageError
from .._evaluate import QuerySet, Ranker
from .._progress import TerminalReporter
from ._common import Commands, add_command, load, spec_arg

__all__ = ["register"]

EXAMPLES = """\
query file (YAML), one spec:
  queries:
    - q: "make my repo private"
      expect: ["PATCH /repos/{owner}/{repo}"]     # every correct first call: METHOD /path,
    - q: "who starred my project"                 # api.<group>.<name> or an operationId
      expect: ["GET /repos/{owner}/{repo}/stargazers"]
(a file with `specs: {name: {file: …, queries: […]}}` works too: the entries whose file is SPEC are used)

examples:
  codemode eval-search github.json --queries my-queries.yaml
  codemode eval-search github.json --queries my-queries.yaml --ranker all -v
"""


def register(commands: Commands) -> None:
    p = add_command(
        commands, "eval-search", run,
        help="measure search on labelled queries (recall@1, recall@5, latency)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("spec", help="file, folder or URL of the spec")
    p.add_argument("--queries", required=True, type=Path, metavar="FILE.yaml", help="labelled queries")
    p.add_argument(
        "--ranker", choices=["bm25", "embed", "hybrid", "all"], default="hybrid",
        help="hybrid (default; BM25 alone when the semantic model is not installed), bm25, embed, or all three",
    )  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true", help="print every query that missed the top 5")


def _matching(sets: list[QuerySet], spec_path: str) -> list[QuerySet]:
    """The query sets of FILE that belong to SPEC: all of a one-spec file, else those whose file is SPEC."""
    if len(sets) == 1 or all(qs.file is None for qs in sets):
        return sets
    target = Path(spec_path)
    picked = [qs for qs in sets if qs.file and (target.name == Path(qs.file).name or str(target).endswith(qs.file))]
    if not picked:
        names = ", ".join(f"{qs.key} ({qs.file})" for qs in sets)
        raise UsageError(
            f"no entry of the query file is for {target.name}; its entries: {names}.", code="eval.no_entry"
        )
    return picked


def run(args: argparse.Namespace) -> int:
    from .._embed import semantic_installed
    from .._evaluate import evaluate, load_queries, markdown_table
    from .._search import SearchIndex

    sets = load_queries(args.queries)
    source = spec_arg(args.spec)
    spec = load(source, args)
    sets = _matching(sets, source)
    rankers: list[Ranker] = ["bm25", "embed", "hybrid"] if args.ranker == "all" else [args.ranker]
    if not semantic_installed() and args.ranker in ("hybrid", "all"):
        print("(the semantic model is not installed: pip install 'codemode-mcp[semantic]'; measuring BM25)")
        rankers = ["bm25"]
    term = TerminalReporter()
    for ranker in rankers:
        index = SearchIndex(spec, embedder=None if ranker == "bm25" else "auto", progress=term)
        results = [evaluate(spec, qs, ranker, index=index) for qs in sets]
        print("\n" + markdown_table(results, f"ranker: {ranker} ({spec.title}, {args.queries.name})"))
        if args.verbose:
            for r in results:
                for q, want, got in r.misses:
                    print(f"MISS [{r.key}] {q!r}: want {want[0]}, got {', '.join(got) or 'nothing'}")
    return 0
