"""``codemode serve``: one spec as an MCP server over stdio, SSE or streamable HTTP."""

from __future__ import annotations

import argparse
import sys

from .._listen import listen_socket
from ._common import (
    DEFAULT_SPEC,
    PORT,
    Commands,
    add_command,
    execute_options,
    load,
    source_and_settings,
    startup_done,
)

__all__ = ["register"]

EXAMPLES = """\
  codemode serve                                   # the bundled Petstore spec over stdio
  codemode serve https://example.com/openapi.json  # a spec by URL
  codemode serve github.json --read-only --header 'Authorization: Bearer ${GITHUB_TOKEN}'
  codemode serve kinto                             # a bundled server config (servers/kinto.toml)
  codemode serve spec.yaml --transport http --port 8000   # streamable HTTP at http://127.0.0.1:8000/mcp
"""


def register(commands: Commands) -> None:
    p = add_command(commands, "serve", run, help="serve a spec as an MCP server", examples=EXAMPLES)
    p.add_argument(
        "spec", nargs="?",
        help=f"file, folder, URL, servers/*.toml config or a bundled name (default: bundled {DEFAULT_SPEC})",
    )  # fmt: skip
    p.add_argument("--transport", choices=["stdio", "sse", "http"], default="stdio", help="default: stdio")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on for sse/http (default 127.0.0.1)")
    p.add_argument("--port", type=PORT, default=8000, help="port for sse/http (default 8000)")
    p.add_argument("--stateless", action="store_true", help="stateless streamable HTTP (for replicas)")
    p.add_argument(
        "--allowed-host", action="append", default=[], metavar="HOST",
        help="extra Host header allowed (DNS-rebinding protection; repeatable)",
    )  # fmt: skip
    execute_options(p)


def run(args: argparse.Namespace) -> int:
    from .._progress import TerminalReporter
    from .._server import CodemodeServer

    # The port first: a busy one is one line now, not a crash after the spec loaded (issue 6).
    sock = listen_socket(args.host, args.port) if args.transport != "stdio" else None
    try:
        source, settings = source_and_settings(args)
        spec = load(source, args)
        for w in spec.warnings[:5]:
            print(f"warning: {w}", file=sys.stderr)
        if len(spec.warnings) > 5:
            print(f"warning: …and {len(spec.warnings) - 5} more (codemode inspect SPEC lists them)", file=sys.stderr)
        # Slow background steps (the isolate's first build, a spec's first embeddings) report on stderr:
        # a bar on a terminal, plain lines in a client's log file.
        server = CodemodeServer(spec, settings, progress=TerminalReporter())
        startup_done()
        if args.transport != "stdio":
            path = "/sse" if args.transport == "sse" else "/mcp"
            print(f"serving {spec.title} on http://{args.host}:{args.port}{path}", file=sys.stderr)
        server.run(args.transport, host=args.host, port=args.port, stateless=args.stateless,
                   allowed_hosts=tuple(args.allowed_host), sock=sock)  # fmt: skip
    finally:
        if sock is not None:
            sock.close()
    return 0
