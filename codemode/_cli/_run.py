"""``codemode run``: execute a Python file against a spec, as the execute tool would."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ._common import Commands, add_command, execute_options, load, source_and_settings

__all__ = ["register"]


def register(commands: Commands) -> None:
    p = add_command(commands, "run", run, help="execute a Python file against a spec, as the execute tool would")
    p.add_argument("spec")
    p.add_argument("file", help="a .py file, or - for standard input")
    p.add_argument("--dry-run", action="store_true")
    execute_options(p)


def run(args: argparse.Namespace) -> int:
    from .._server import CodemodeServer

    code = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    source, settings = source_and_settings(args)
    spec = load(source, args)
    server = CodemodeServer(spec, settings)

    async def go() -> tuple[str, bool]:
        async with server._lifespan(server.mcp):
            result = await server.execute(code, dry_run=args.dry_run)
        return result.content[0].text, bool(result.is_error)  # type: ignore[union-attr]

    text, is_error = asyncio.run(go())
    print(text)
    return 1 if is_error else 0
