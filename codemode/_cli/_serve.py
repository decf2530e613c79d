"""``codemode serve``: one spec as an MCP server over stdio, SSE or streamable HTTP."""

from __future__ import annotations

import argparse
import sys

from ._common import DEFAULT_SPEC, Commands, add_command, execute_options, load, source_and_settings, startup_done

__all__ = ["register"]


def register(commands: Commands) -> None:
    p = add_command(commands, "serve", run, help="serve a spec as an MCP server")
    p.add_argument(
        "spec", nargs="?", help=f"file, folder, URL or servers/*.toml config (default: bundled {DEFAULT_SPEC})"
    )
    p.add_argument("--transport", choices=["stdio", "sse", "http"], default="stdio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--stateless", action="store_true", help="stateless streamable HTTP (for replicas)")
    p.add_argument("--allowed-host", action="append", default=[], help="extra Host allowed (DNS rebinding)")
    execute_options(p)


def run(args: argparse.Namespace) -> int:
    from .._progress import TerminalReporter
    from .._server import CodemodeServer

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
               allowed_hosts=tuple(args.allowed_host))  # fmt: skip
    return 0
