"""``codemode search``: the search tool, from the shell."""

from __future__ import annotations

import argparse
import asyncio

from ._common import Commands, NoSandbox, add_command, bounded_int, http_method, load, spec_only

__all__ = ["register"]

EXAMPLES = """\
  codemode search github.json "create a pull request"
  codemode search github.json "list issues" --method GET --limit 3
  codemode search github.json --detail api.pulls.create    # one operation's full types
  codemode search github.json --detail schema:PullRequest  # one type
  codemode search petstore3-openapi.yaml --tag store       # every operation of a tag
"""


def register(commands: Commands) -> None:
    p = add_command(commands, "search", run, help="search a spec from the shell", examples=EXAMPLES)
    p.add_argument("spec", help="file, folder, URL or a bundled spec's name")
    p.add_argument("query", nargs="?", default="", help="the task, in plain words")
    p.add_argument("--detail", help="api.<group>.<name>, an operationId, 'GET /path' or schema:<Name>")
    p.add_argument("--tag", help="only operations with this tag")
    p.add_argument("--method", type=http_method, help="only operations with this HTTP method")
    p.add_argument("--path-prefix", metavar="PREFIX", help="only operations whose path starts with this")
    p.add_argument("--limit", type=bounded_int(1, 50), metavar="N", help="hits to show (1-50, default 8)")


def run(args: argparse.Namespace) -> int:
    from .._progress import TerminalReporter
    from .._server import CodemodeServer

    spec = load(spec_only(args.spec), args)
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
