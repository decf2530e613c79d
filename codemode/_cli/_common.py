"""What several commands share: global flags, spec arguments, execute options, flag merging."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from pydantic import ValidationError

from .._cache import load_spec
from .._errors import UsageError
from .._ir import ApiSpec
from .._sandbox import Bridge, RunOutcome, SandboxLimits
from .._settings import ServerSettings
from .._upstream import UpstreamSettings

__all__ = [
    "BUNDLED",
    "DEFAULT_SPEC",
    "Commands",
    "NoSandbox",
    "add_command",
    "apply_flags",
    "execute_options",
    "global_options",
    "load",
    "source_and_settings",
    "spec_arg",
    "startup_done",
]

BUNDLED = Path(__file__).resolve().parent.parent.parent / "specs"
DEFAULT_SPEC = "petstore3-openapi.yaml"
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # what ``add_subparsers`` returns
Handler = Callable[[argparse.Namespace], int]


def global_options(*, suppress: bool) -> argparse.ArgumentParser:
    """``--debug`` and ``--no-cache``, accepted before and after the command name.

    On the command's own parser the defaults are suppressed, so a flag given before the
    command is not reset by the command's parser.
    """
    p = argparse.ArgumentParser(add_help=False)
    default: Any = argparse.SUPPRESS if suppress else False
    p.add_argument("--debug", action="store_true", default=default, help="show tracebacks and debug logs")
    p.add_argument("--no-cache", action="store_true", default=default, help="parse the spec even if a cached IR exists")
    return p


def add_command(commands: Commands, name: str, handler: Handler, **kwargs: Any) -> argparse.ArgumentParser:
    """A command's parser, with the global flags and its handler attached."""
    parser: argparse.ArgumentParser = commands.add_parser(name, parents=[global_options(suppress=True)], **kwargs)
    parser.set_defaults(handler=handler)
    return parser


def spec_arg(value: str | None) -> str:
    if value is None:
        return str(BUNDLED / DEFAULT_SPEC)
    if not Path(value).exists() and (BUNDLED / value).exists():
        return str(BUNDLED / value)
    return value


def execute_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", help="upstream base URL, overriding the spec's servers")
    p.add_argument(
        "--header", action="append", default=[], metavar="'Name: value'",
        help="static upstream header; ${VAR} in the value is read from the environment",
    )  # fmt: skip
    p.add_argument("--read-only", action="store_true", help="only GET/HEAD/OPTIONS operations are callable")
    p.add_argument("--allow", action="append", default=[], help="only these operations (key, operationId, glob)")
    p.add_argument("--deny", action="append", default=[], help="never these operations")
    p.add_argument("--max-calls", type=int, help="API calls per execution (default 50)")
    p.add_argument("--timeout", type=float, help="seconds per execution (default 30)")
    p.add_argument("--name", help="server name shown to clients")


def _headers(args: argparse.Namespace) -> dict[str, str]:
    from .._config import expand_env

    headers: dict[str, str] = {}
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {raw!r} is not 'Name: value'.", code="config.bad_header")
        headers[name.strip()] = expand_env(value.strip(), os.environ, "--header")
    return headers


def apply_flags(settings: ServerSettings, args: argparse.Namespace) -> ServerSettings:
    """Flags given on the command line win over a config file; lists of denials add up."""
    ex = settings.execute
    limits = ex.limits if args.timeout is None else ex.limits.model_copy(update={"timeout_seconds": args.timeout})
    execute = ex.model_copy(
        update={
            "limits": limits,
            "read_only": ex.read_only or args.read_only,
            "deny": (*ex.deny, *args.deny),
            "allow": tuple(args.allow) or ex.allow,
            "max_calls": ex.max_calls if args.max_calls is None else args.max_calls,
        }
    )
    up = settings.upstream
    flags = _headers(args)
    given = {name.lower() for name in flags}
    headers = {**{k: v for k, v in up.headers.items() if k.lower() not in given}, **flags}
    upstream = UpstreamSettings(**{**up.model_dump(), "base_url": args.base_url or up.base_url, "headers": headers})
    merged = settings.model_copy(update={"execute": execute, "upstream": upstream, "name": args.name or settings.name})
    try:
        return ServerSettings.model_validate(merged.model_dump())  # validate the merged values again
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"invalid option: {problems}.", code="config.invalid") from None


def load(source: str, args: argparse.Namespace) -> ApiSpec:
    from .._progress import TerminalReporter, step

    started = time.perf_counter()
    with step(TerminalReporter(), f"loading {source}"):  # shown only if it takes a while (a big spec, no cache)
        spec = load_spec(source, use_cache=not args.no_cache)
    logging.getLogger("codemode").info(
        "loaded %s: %d operations, %d warnings in %.0f ms",
        spec.title, len(spec.operations), len(spec.warnings), (time.perf_counter() - started) * 1000,
    )  # fmt: skip
    return spec


def source_and_settings(args: argparse.Namespace) -> tuple[str, ServerSettings]:
    """A spec, or a ``servers/*.toml`` config; command-line flags apply on top of either."""
    source = spec_arg(args.spec)
    settings = ServerSettings()
    if source.endswith(".toml"):
        from .._config import load_server_config

        source, settings = load_server_config(Path(source))
    return source, apply_flags(settings, args)


def startup_done() -> None:
    """Called once the server is built: re-enable GC and move start-up objects out of its way."""
    import gc

    gc.enable()
    gc.freeze()


class NoSandbox:
    """For commands that never execute code (``codemode search``)."""

    def run(
        self, code: str, bridge: Bridge, *, inject: Sequence[str] = ("api",), limits: SandboxLimits | None = None
    ) -> RunOutcome:
        raise UsageError("this command cannot execute code", code="usage.no_sandbox")

    def prepare(self) -> None:
        return None
