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
from .._config import server_config_spec
from .._errors import UsageError
from .._ir import ApiSpec
from .._sandbox import Bridge, RunOutcome, SandboxLimits
from .._settings import ServerSettings
from .._upstream import UpstreamSettings

__all__ = [
    "BUNDLED",
    "BUNDLED_SERVERS",
    "DEFAULT_SPEC",
    "HTTP_METHODS",
    "PORT",
    "Commands",
    "NoSandbox",
    "add_command",
    "apply_flags",
    "bounded_int",
    "execute_options",
    "global_options",
    "http_method",
    "load",
    "positive_float",
    "source_and_settings",
    "spec_arg",
    "spec_only",
    "startup_done",
]

BUNDLED_ROOT = Path(__file__).resolve().parent.parent / "_bundled"  # shipped in the wheel (package data)
BUNDLED = BUNDLED_ROOT / "specs"
BUNDLED_SERVERS = BUNDLED_ROOT / "servers"
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


def add_command(
    commands: Commands, name: str, handler: Handler, *, examples: str | None = None, **kwargs: Any
) -> argparse.ArgumentParser:
    """A command's parser, with the global flags and its handler attached; ``examples`` end its ``--help``."""
    if examples:
        kwargs.setdefault("epilog", "examples:\n" + examples.rstrip())
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    if "help" in kwargs:
        kwargs.setdefault("description", kwargs["help"][:1].upper() + kwargs["help"][1:] + ".")
    parser: argparse.ArgumentParser = commands.add_parser(name, parents=[global_options(suppress=True)], **kwargs)
    parser.set_defaults(handler=handler)
    return parser


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``, with an error that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range (must be {span})")
        return value

    parse.__name__ = "number"
    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


PORT = bounded_int(1, 65535)
HTTP_METHODS = ("GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE", "QUERY")


def http_method(text: str) -> str:
    if text.upper() not in HTTP_METHODS:
        raise argparse.ArgumentTypeError(f"{text!r} is not an HTTP method (one of {', '.join(HTTP_METHODS)})")
    return text.upper()


def spec_arg(value: str | None) -> str:
    """A spec or config argument; names of the bundled ones work from any folder.

    ``petstore3-openapi.yaml``, ``specs/…``, ``servers/kinto.toml`` and ``kinto`` (a bundled
    server config) resolve to the files shipped with the package when no such local file exists.
    """
    if value is None:
        return str(BUNDLED / DEFAULT_SPEC)
    if value.startswith(("http://", "https://")) or Path(value).exists():
        return value
    candidates = (BUNDLED / value, BUNDLED_ROOT / value, BUNDLED_SERVERS / value, BUNDLED_SERVERS / f"{value}.toml")
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return value


def spec_only(value: str | None) -> str:
    """The spec a spec-or-config argument names (a ``.toml`` config's ``[server] spec``; no settings)."""
    source = spec_arg(value)
    return server_config_spec(Path(source)) if source.endswith(".toml") else source


def execute_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", metavar="URL", help="upstream base URL, overriding the spec's servers")
    p.add_argument(
        "--header", action="append", default=[], metavar="'Name: value'",
        help="static upstream header (repeatable); ${VAR} in the value is read from the environment",
    )  # fmt: skip
    p.add_argument("--read-only", action="store_true", help="only GET/HEAD/OPTIONS operations are callable")
    p.add_argument(
        "--allow", action="append", default=[], metavar="PATTERN",
        help="only these operations: group.name, operationId or 'METHOD /path', globs allowed (repeatable)",
    )  # fmt: skip
    p.add_argument("--deny", action="append", default=[], metavar="PATTERN", help="never these operations (repeatable)")
    p.add_argument("--max-calls", type=bounded_int(0), metavar="N", help="API calls per execution (default 50)")
    p.add_argument("--timeout", type=positive_float, metavar="S", help="seconds per execution (default 30)")
    p.add_argument("--name", help="server name shown to clients (default: from the spec's title)")
    p.add_argument(
        "--credential-param", action="append", default=[], metavar="NAME",
        help="a parameter that carries a credential (e.g. Slack's token): hidden from the model, the "
        "server's own credentials stand in (repeatable)",
    )  # fmt: skip


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
    credential_params = tuple(getattr(args, "credential_param", ()) or ())
    params = settings.params.model_copy(
        update={"credentials": tuple(dict.fromkeys((*settings.params.credentials, *credential_params)))}
    )
    merged = settings.model_copy(
        update={"execute": execute, "upstream": upstream, "name": args.name or settings.name, "params": params}
    )
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
