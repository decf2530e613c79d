"""``codemode warmup [SPEC…]``: prepare everything ahead of time, with progress on stderr.

For each spec: the IR cache, the BM25 index and the semantic embeddings (when the
optional model is installed); then, once, the wasm isolate (built with componentize-py
and compiled by wasmtime). Everything lands in the cache directory, so a server started
afterwards serves hybrid search and runs code without a first-use wait.
"""

from __future__ import annotations

import argparse
import time

from .._progress import TerminalReporter
from ._common import Commands, add_command, load, spec_arg

__all__ = ["register"]

EXAMPLES = """\
examples:
  codemode warmup                                   # the isolate only
  codemode warmup specs/petstore3-openapi.yaml      # the spec's caches and search index, then the isolate
  codemode warmup github.json cloudflare.json --no-isolate
"""


def register(commands: Commands) -> None:
    p = add_command(
        commands, "warmup", run,
        help="prepare the IR cache, search index, embeddings and the isolate ahead of time",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("specs", nargs="*", metavar="SPEC", help="specs (files, folders or URLs) to prepare")
    p.add_argument("--no-isolate", action="store_true", help="skip the wasm isolate")


def run(args: argparse.Namespace) -> int:
    from .._search import SearchIndex

    term = TerminalReporter()
    for source in args.specs:
        started = time.perf_counter()
        spec = load(spec_arg(source), args)
        index = SearchIndex(spec, progress=term)
        semantic = index.load_embeddings()
        how = "hybrid (BM25 + semantic)" if semantic else f"BM25 only (semantic: {index.semantic_state})"
        print(
            f"{spec.title}: {len(spec.operations):,} operations, search {how}, "
            f"ready in {time.perf_counter() - started:.1f} s"
        )
    if not args.no_isolate:
        from .._sandbox import WasmSandbox

        started = time.perf_counter()
        WasmSandbox(progress=term).prepare()
        print(f"isolate ready in {time.perf_counter() - started:.1f} s")
    return 0
