"""The ``codemode`` command. Thin: parses arguments, builds settings, calls the library.

Each command lives in its own module and registers itself on the parser
(``register(commands)``). Other installed packages add commands through the
``codemode.commands`` entry-point group (the OAuth portal adds ``portal`` and
``connect`` this way), so the engine never imports them.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from .. import __version__
from .._errors import CodemodeError, UsageError
from . import _eval_search, _inspect, _install, _run, _search, _serve, _warmup
from ._common import global_options

__all__ = ["COMMAND_ENTRY_POINTS", "build_parser", "entry", "main"]

COMMAND_ENTRY_POINTS = "codemode.commands"
_BUILTIN = (_serve, _search, _run, _inspect, _warmup, _install, _eval_search)
log = logging.getLogger("codemode.cli")
EPILOG = """\
examples:
  codemode serve                                  # the bundled Petstore spec, over stdio
  codemode serve https://example.com/openapi.json --read-only
  codemode search github.json "create a pull request"
  codemode run petstore3-openapi.yaml script.py --dry-run
  codemode install claude-desktop github.json --env GITHUB_TOKEN
  codemode COMMAND --help                         # each command's options and examples
"""


def _command_word(argv: Sequence[str]) -> str | None:
    """The command named in ``argv``: global options are flags only, so it is the first word."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser: built-in commands, then commands from installed plugins.

    With ``argv``, a plugin is imported only when it can matter: a built-in command (``serve``,
    which stdio clients start) or ``--version`` imports none, a plugin's command imports that one
    plugin, anything else (help, a typo) imports all so that usage lists them.
    """
    p = argparse.ArgumentParser(
        prog="codemode",
        description="Any OpenAPI spec as an MCP server with two tools: search and execute.",
        parents=[global_options(suppress=False)],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"codemode-mcp {__version__}")
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _BUILTIN:
        module.register(commands)
    plugins = sorted(entry_points(group=COMMAND_ENTRY_POINTS), key=lambda e: e.name)
    if argv is not None:
        word = _command_word(argv)
        if word in commands.choices or (word is None and "--version" in argv):
            plugins = []
        elif any(ep.name == word for ep in plugins):
            plugins = [ep for ep in plugins if ep.name == word]
    for ep in plugins:
        try:
            register = ep.load()
        except ImportError as exc:  # a plugin whose extra is not installed: its command is absent
            log.debug("command plugin %s not loaded: %s", ep.name, exc)
            continue
        try:
            register(commands)
        except argparse.ArgumentError as exc:  # e.g. it names a command that exists: the first one stays
            print(f"codemode: command plugin {ep.name!r} ({ep.value}) skipped: {exc}", file=sys.stderr)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s"
    )
    try:
        code: int = args.handler(args)
        return code
    except CodemodeError as exc:
        if args.debug:
            raise
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and friends
        return 0
    except Exception as exc:
        if args.debug:
            raise
        print(f"error [internal]: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)", file=sys.stderr)
        return 1


def entry() -> None:
    # Start-up allocates many long-lived objects (pydantic models, the IR); collecting them over
    # and over while importing costs ~0.2 s. Collect once afterwards and freeze what is left.
    gc.disable()
    try:
        code = main()
    finally:
        gc.enable()
    sys.exit(code)
