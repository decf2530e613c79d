"""The ``codemode`` command. Thin: parses arguments, builds settings, calls the library."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from . import __version__
from ._cache import load_spec
from ._errors import CodemodeError, UsageError
from ._ir import ApiSpec
from ._sandbox import Bridge, RunOutcome, SandboxLimits
from ._settings import ServerSettings
from ._upstream import UpstreamSettings

__all__ = ["main"]

BUNDLED = Path(__file__).resolve().parent.parent / "specs"
DEFAULT_SPEC = "petstore3-openapi.yaml"


def _spec_arg(value: str | None) -> str:
    if value is None:
        return str(BUNDLED / DEFAULT_SPEC)
    if not Path(value).exists() and (BUNDLED / value).exists():
        return str(BUNDLED / value)
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="codemode", description="Any OpenAPI spec as an MCP server with two tools.")
    p.add_argument("--version", action="version", version=f"codemode-mcp {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("--no-cache", action="store_true", help="parse the spec even if a cached IR exists")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a spec as an MCP server")
    serve.add_argument(
        "spec", nargs="?", help=f"file, folder, URL or servers/*.toml config (default: bundled {DEFAULT_SPEC})"
    )
    serve.add_argument("--transport", choices=["stdio", "sse", "http"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--stateless", action="store_true", help="stateless streamable HTTP (for replicas)")
    serve.add_argument("--allowed-host", action="append", default=[], help="extra Host allowed (DNS rebinding)")
    _execute_options(serve)

    search = sub.add_parser("search", help="search a spec from the shell")
    search.add_argument("spec")
    search.add_argument("query", nargs="?", default="")
    search.add_argument("--detail", help="api.<group>.<name>, an operationId, 'GET /path' or schema:<Name>")
    search.add_argument("--tag")
    search.add_argument("--method")
    search.add_argument("--path-prefix")
    search.add_argument("--limit", type=int)

    run = sub.add_parser("run", help="execute a Python file against a spec, as the execute tool would")
    run.add_argument("spec")
    run.add_argument("file", help="a .py file, or - for standard input")
    run.add_argument("--dry-run", action="store_true")
    _execute_options(run)

    inspect = sub.add_parser("inspect", help="load a spec and report what was found and every warning")
    inspect.add_argument("spec")

    sub.add_parser("warmup", help="build and compile the wasm isolate ahead of time")
    return p


def _execute_options(p: argparse.ArgumentParser) -> None:
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
    from ._config import expand_env

    headers: dict[str, str] = {}
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {raw!r} is not 'Name: value'.", code="config.bad_header")
        headers[name.strip()] = expand_env(value.strip(), os.environ, "--header")
    return headers


def _apply_flags(settings: ServerSettings, args: argparse.Namespace) -> ServerSettings:
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


def _load(source: str, args: argparse.Namespace) -> ApiSpec:
    started = time.perf_counter()
    spec = load_spec(source, use_cache=not args.no_cache)
    logging.getLogger("codemode").info(
        "loaded %s: %d operations, %d warnings in %.0f ms",
        spec.title, len(spec.operations), len(spec.warnings), (time.perf_counter() - started) * 1000,
    )  # fmt: skip
    return spec


def _source_and_settings(args: argparse.Namespace) -> tuple[str, ServerSettings]:
    """A spec, or a ``servers/*.toml`` config; command-line flags apply on top of either."""
    source = _spec_arg(args.spec)
    settings = ServerSettings()
    if source.endswith(".toml"):
        from ._config import load_server_config

        source, settings = load_server_config(Path(source))
    return source, _apply_flags(settings, args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from ._server import CodemodeServer

    source, settings = _source_and_settings(args)
    spec = _load(source, args)
    for w in spec.warnings[:5]:
        print(f"warning: {w}", file=sys.stderr)
    if len(spec.warnings) > 5:
        print(f"warning: …and {len(spec.warnings) - 5} more (codemode inspect SPEC lists them)", file=sys.stderr)
    server = CodemodeServer(spec, settings)
    startup_done()
    if args.transport != "stdio":
        path = "/sse" if args.transport == "sse" else "/mcp"
        print(f"serving {spec.title} on http://{args.host}:{args.port}{path}", file=sys.stderr)
    server.run(args.transport, host=args.host, port=args.port, stateless=args.stateless,
               allowed_hosts=tuple(args.allowed_host))  # fmt: skip
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from ._server import CodemodeServer

    spec = _load(_spec_arg(args.spec), args)
    server = CodemodeServer(spec, sandbox=_NoSandbox())
    server.index.load_embeddings()  # the optional semantic ranker (cached per spec after the first run)
    result = asyncio.run(
        server.search(args.query, tag=args.tag, method=args.method, path_prefix=args.path_prefix,
                      detail=args.detail, limit=args.limit)
    )  # fmt: skip
    text = result.content[0].text  # type: ignore[union-attr]
    print(text)
    return 1 if result.is_error else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ._server import CodemodeServer

    code = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    source, settings = _source_and_settings(args)
    spec = _load(source, args)
    server = CodemodeServer(spec, settings)

    async def go() -> tuple[str, bool]:
        async with server._lifespan(server.mcp):
            result = await server.execute(code, dry_run=args.dry_run)
        return result.content[0].text, bool(result.is_error)  # type: ignore[union-attr]

    text, is_error = asyncio.run(go())
    print(text)
    return 1 if is_error else 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    spec = _load(_spec_arg(args.spec), args)
    print(f"{spec.title} {spec.version} (spec {spec.spec_version})")
    print(f"operations: {len(spec.operations)}  schemas: {len(spec.schemas)}  webhooks: {spec.webhooks}")
    print(f"servers: {', '.join(spec.servers) or '(none: pass --base-url)'}")
    print(f"security schemes: {', '.join(spec.security_schemes) or '(none)'}")
    from ._credentials import Credentials

    for line in Credentials.from_env(spec.security_schemes, os.environ).describe():
        print(f"  {line}")
    print(f"warnings: {len(spec.warnings)}")
    for w in spec.warnings:
        print(f"  {w}")
    return 0


def _cmd_warmup(args: argparse.Namespace) -> int:
    from ._sandbox import WasmSandbox

    started = time.perf_counter()
    WasmSandbox().prepare()
    print(f"isolate ready in {time.perf_counter() - started:.1f} s")
    return 0


class _NoSandbox:
    """For commands that never execute code (``codemode search``)."""

    def run(
        self, code: str, bridge: Bridge, *, inject: Sequence[str] = ("api",), limits: SandboxLimits | None = None
    ) -> RunOutcome:
        raise UsageError("this command cannot execute code", code="usage.no_sandbox")

    def prepare(self) -> None:
        return None


COMMANDS = {"serve": _cmd_serve, "search": _cmd_search, "run": _cmd_run, "inspect": _cmd_inspect,
            "warmup": _cmd_warmup}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command](args)
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


def startup_done() -> None:
    """Called once the server is built: re-enable GC and move start-up objects out of its way."""
    gc.enable()
    gc.freeze()
