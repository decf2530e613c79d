"""``codemode run``: execute a Python file against a spec, as the execute tool would."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from .._errors import UsageError
from ._common import Commands, add_command, execute_options, load, source_and_settings

__all__ = ["human", "register"]

EXAMPLES = """\
  codemode run petstore3-openapi.yaml script.py --dry-run   # stand-in answers, nothing is sent
  echo 'result = api.pet.find_pets_by_status(status="sold")' | codemode run petstore - --json
  codemode run kinto script.py                               # a bundled server config
"""


def register(commands: Commands) -> None:
    p = add_command(
        commands, "run", run, help="execute a Python file against a spec, as the execute tool would",
        examples=EXAMPLES,
    )  # fmt: skip
    p.add_argument("spec", help="file, folder, URL, servers/*.toml config or a bundled name")
    p.add_argument("file", help="a .py file, or - for standard input")
    p.add_argument("--dry-run", action="store_true", help="answer every call with a stand-in; send nothing")
    p.add_argument("--json", action="store_true", help="print the execute tool's JSON answer as it is")
    execute_options(p)


def _read_code(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    path = Path(name)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"code file {name} does not exist.", code="usage.file_not_found") from None
    except IsADirectoryError:
        raise UsageError(f"{name} is a folder, not a Python file.", code="usage.file_not_found") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name} is not UTF-8 text.", code="usage.bad_file") from None
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}.", code="usage.bad_file") from None


def human(text: str) -> str:
    """The execute answer for people: output as printed, the result as indented JSON, one line per call."""
    try:
        answer: dict[str, Any] = json.loads(text)
    except ValueError:
        return text
    if not isinstance(answer, dict):
        return text
    lines: list[str] = []
    if answer.get("stdout"):
        lines.append(str(answer["stdout"]).rstrip("\n"))
    if "result" in answer:
        lines.append("result = " + json.dumps(answer["result"], indent=2, ensure_ascii=False))
    if answer.get("error"):
        lines.append(f"error: {answer['error']}")
        if answer.get("traceback"):
            lines.append(str(answer["traceback"]).rstrip("\n"))
    for call in answer.get("calls") or []:
        lines.append(f"call: {call.get('method')} {call.get('path')} -> {call.get('status')} ({call.get('ms')} ms)")
    for note in answer.get("notes") or []:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from .._progress import TerminalReporter
    from .._server import CodemodeServer

    code = _read_code(args.file)
    source, settings = source_and_settings(args)
    spec = load(source, args)
    server = CodemodeServer(spec, settings, progress=TerminalReporter())

    async def go() -> tuple[str, bool]:
        async with server._lifespan(server.mcp):
            result = await server.execute(code, dry_run=args.dry_run)
        return result.content[0].text, bool(result.is_error)  # type: ignore[union-attr]

    text, is_error = asyncio.run(go())
    print(text if args.json else human(text))
    return 1 if is_error else 0
