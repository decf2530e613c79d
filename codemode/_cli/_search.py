"""``codemode search``: the search tool, from the shell."""

from __future__ import annotations

import argparse
import asyncio

from ._common import Commands, NoSandbox, add_command, load, spec_arg

__all__ = ["register"]


def register(commands: Commands) -> None:
    p = add_command(commands, "search", run, help="search a spec from the shell")
    p.add_argument("spec")
    p.add_argument("query", nargs="?", default="")
    p.add_argument("--detail", help="api.<group>.<name>, an operationId, 'GET /path' or schema:<Name>")
    p.add_argument("--tag")
    p.add_argument("--method")
    p.add_argument("--path-prefix")
    p.add_argument("--limit", type=int)


def run(args: argparse.Namespace) -> int:
    from .._progress import TerminalReporter
    from .._server import CodemodeServer

    spec = load(spec_arg(args.spec), args)
    # A first search of a spec builds its embeddings (once, then cached): a bar or lines on stderr.
    server = CodemodeServer(spec, sandbox=NoSandbox(), progress=TerminalReporter())
    server.index.load_embeddings()  # the optional semantic ranker (cached per spec after the first run)
    result = asyncio.run(
        server.search(args.query, tag=args.tag, method=args.method, path_prefix=args.path_prefix,
                      detail=args.detail, limit=args.limit)
    )  # fmt: skip
    text = result.content[0].text  # type: ignore[union-attr]
    print(text)
    return 1 if result.is_error else 0
