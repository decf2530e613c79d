"""The MCP server: exactly two tools, ``search`` and ``execute``, over one spec."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, EmptyResult, SetLevelRequestParams, TextContent, ToolAnnotations
from pydantic import Field

from . import __version__
from ._access import AccessHook, Caller
from ._admission import ExecutionLimiter
from ._answer import answer_detail, answer_search
from ._credentials import Credentials, seed_scrubber
from ._errors import ConfigError
from ._execute import Executor
from ._fills import ParamFills, apply_server_fills
from ._format import format_execute
from ._hostcheck import ExactHostCheck
from ._ir import ApiSpec, Operation
from ._oppolicy import OperationPolicy
from ._progress import McpReporter, ProgressHub, Reporter
from ._render import signature
from ._sandbox import Sandbox, WasmSandbox
from ._scrub import log_scrubbing
from ._search import SearchIndex
from ._settings import ServerSettings
from ._upstream import AuditHook, HttpxUpstream, Upstream

__all__ = ["CodemodeServer", "Transport", "example_operation", "server_name"]

log = logging.getLogger("codemode.server")
Transport = Literal["stdio", "sse", "http"]

SEARCH_DESCRIPTION = """\
Find operations of the {title} API ({n} operations) for a task: typed Python signatures beside \
METHOD /path, to call in `execute`. query: the task in plain words; no query: a table of contents. \
tag, method, path_prefix: filters. detail: "api.<group>.<name>", an operationId or "GET /path" for \
full types; "schema:<Name>" for one type. code: Python given a read-only `spec` (spec.operations, \
spec.schema(name)), for questions a ranking cannot answer; set `result`."""

EXECUTE_DESCRIPTION = """\
Run Python in a sandbox whose one capability is `api`, a typed client of the {title} API. Call \
`api.<group>.<name>(...)` as `search` shows, or `api.call("operationId" or "METHOD /path", **kw)`: \
synchronous, returns parsed JSON; a failed call raises `ApiError` (.status, .body). You get print() \
output, the variable `result` and a call log. Files: {{"filename", "content_base64"}}. No files, \
network or secrets: the server adds credentials. Stdlib only. dry_run: stand-in responses, no \
upstream calls."""

INSTRUCTIONS = """\
This server exposes the {title} API ({n} operations) through two tools.
1. search(query) finds operations and shows them as typed Python signatures{example} \
search() with no query lists the tags.
2. execute(code) runs your Python with `api` bound to this API: do the whole task in one \
program (loops, filtering, joining results), print what matters or set `result`.
Prefer one execute call that does many API calls over many tool calls. Never put credentials in \
code: the server adds them. Write operations may be refused when the server is read-only."""
# Words left out of a server name made from a spec's title (``GitHub's official OpenAPI spec + Octokit``).
NAME_NOISE = frozenset(
    {"a", "an", "the", "of", "for", "and", "s", "api", "apis", "openapi", "swagger", "spec", "specification",
     "official", "rest", "restful", "http", "web", "service", "description", "definition", "documentation"}
)  # fmt: skip
MAX_NAME_WORDS = 2


def server_name(title: str) -> str:
    """A short, stable ``serverInfo`` name from a title: ``Swagger Petstore - OpenAPI 3.0`` -> ``petstore``."""
    words = [w for w in re.split(r"[^a-z0-9]+", title.lower().replace("'s ", " ")) if w]
    kept = [w for w in words if w not in NAME_NOISE and not re.fullmatch(r"v?\d+", w)]
    return "-".join(kept[:MAX_NAME_WORDS]) or "api"


def example_operation(spec: ApiSpec) -> Operation | None:
    """The operation the instructions show: a short read with a path parameter if there is one."""

    def rank(op: Operation) -> tuple[int, int, int, int]:
        visible = op.visible_params
        has_path = any(p.location == "path" for p in visible)
        required = sum(p.required for p in visible)
        return (not op.read_only, not has_path, required, len(signature(op, max_optional=1)))

    candidates = [op for op in spec.operations if not op.deprecated] or list(spec.operations)
    return min(candidates, key=rank, default=None)


def instructions(spec: ApiSpec) -> str:
    op = example_operation(spec)
    example = "."
    if op is not None:
        example = (
            f", e.g. `{signature(op, max_optional=1)}  # {op.label}`. "
            f'Use search(detail="api.{op.key}") for full parameter and response types.'
        )
    return INSTRUCTIONS.format(title=spec.title, n=len(spec.operations), example=example)


class CodemodeServer:
    """One spec served as an MCP server. Usable without the CLI."""

    def __init__(
        self,
        spec: ApiSpec,
        settings: ServerSettings | None = None,
        *,
        sandbox: Sandbox | None = None,
        upstream: Upstream | None = None,
        env: dict[str, str] | None = None,
        audit_hooks: tuple[AuditHook, ...] = (),
        progress: Reporter | None = None,
        access: AccessHook | None = None,
        limiter: ExecutionLimiter | None = None,
    ) -> None:
        """``access`` identifies the caller of each MCP request (see :mod:`codemode._access`).

        ``limiter`` admits executions (server-wide limit, memory budget, fair share per client);
        a host running several servers passes them one shared limiter. By default each server
        has its own, built from ``settings.executions``.
        """
        settings = settings or ServerSettings()
        fills = ParamFills(settings.params.credentials, settings.params.values, settings.upstream.headers)
        self.spec = spec = apply_server_fills(spec, fills)
        # Every slow background step (isolate build, embeddings) reports here; a tool call that waits
        # for one subscribes an McpReporter for the time it waits (``self.progress.subscribed(...)``).
        self.progress = ProgressHub(*([progress] if progress is not None else []))
        self._access = access
        self.settings = settings
        env = dict(os.environ) if env is None else env
        self.credentials = Credentials.from_env(spec.security_schemes, env, prefix=self.settings.env_prefix)
        self.scrubber = seed_scrubber(self.credentials, self.settings.upstream.headers)  # the one place
        ex = self.settings.execute
        self.policy = OperationPolicy(spec, read_only=ex.read_only, allow=ex.allow, deny=ex.deny)
        self.limiter = limiter or ExecutionLimiter(self.settings.executions)
        if ex.limits.memory_mb > self.limiter.limits.memory_budget_mb:
            raise ConfigError(
                f"memory_mb={ex.limits.memory_mb} of one execution exceeds the execution limiter's "
                f"memory_budget_mb={self.limiter.limits.memory_budget_mb}; no execution could ever run.",
                code="config.memory_budget",
            )
        self.sandbox = sandbox or WasmSandbox(limits=self.settings.execute.limits, progress=self.progress)
        self._upstream = upstream
        self._audit_hooks = audit_hooks
        self._index: SearchIndex | None = None
        self._index_ready = threading.Event()
        self._index_lock = threading.Lock()
        self._executor: Executor | None = None
        self._owned_upstream: HttpxUpstream | None = None
        self._sessions = 0  # lifespans entered and not yet left (SSE enters one per connection)
        self.client_log_level: str | None = None  # set by a client's logging/setLevel
        self.mcp = self._build_mcp()
        # After the SDK's server exists: with no logging configured by the application, it adds a
        # root handler, and the filter must sit on that handler too. httpx's debug lines carry
        # request URLs (and query keys).
        log_scrubbing(self.scrubber)

    # -- background preparation ------------------------------------------------------------
    def start_background_work(self) -> None:
        """Build the search index and ready the isolate off the start-up path."""
        threading.Thread(target=self._build_index_and_embeddings, name="codemode-index", daemon=True).start()
        threading.Thread(target=self._prepare_sandbox, name="codemode-sandbox", daemon=True).start()

    def _build_index(self) -> None:
        with self._index_lock:  # one index per server, whichever thread asks first
            if self._index is None:
                self._index = SearchIndex(self.spec, progress=self.progress)
        self._index_ready.set()

    def _build_index_and_embeddings(self) -> None:
        """Background: BM25 first (search works from then on), then the optional semantic ranker."""
        self._build_index()
        if self._index is not None:
            self._index.load_embeddings()

    def _prepare_sandbox(self) -> None:
        try:
            self.sandbox.prepare()
        except Exception:
            log.exception("preparing the sandbox failed; execute will retry and report the error")

    @property
    def index(self) -> SearchIndex:
        """The search index, built now if it is not yet (blocks: use :meth:`ready_index` from async code)."""
        if not self._index_ready.is_set():
            self._build_index()
        assert self._index is not None
        return self._index

    async def ready_index(self) -> SearchIndex:
        """The search index; while it builds, the wait happens off the event loop (other sessions go on)."""
        if not self._index_ready.is_set():
            await anyio.to_thread.run_sync(self._build_index)
        assert self._index is not None
        return self._index

    # -- MCP wiring --------------------------------------------------------------------------
    @asynccontextmanager
    async def _lifespan(self, _server: MCPServer[Any]) -> AsyncIterator[None]:
        """One upstream client and executor shared by every session; closed when the last one leaves.

        The SDK enters the lifespan once per SSE connection, so it is reference-counted.
        """
        if self._sessions == 0:
            upstream: Upstream
            if self._upstream is None:
                self._owned_upstream = HttpxUpstream(
                    self.settings.upstream, credentials=self.credentials, scrubber=self.scrubber,
                    audit_hooks=self._audit_hooks,
                )  # fmt: skip
                upstream = self._owned_upstream
            else:
                upstream = self._upstream
            self._executor = Executor(
                self.spec, self.sandbox, upstream, self.settings.execute,
                base_url=self.settings.upstream.base_url, scrubber=self.scrubber, limiter=self.limiter,
                reserved=self.credentials.reserved(), static_headers=self.settings.upstream.headers,
                policy=self.policy,
            )  # fmt: skip
        self._sessions += 1
        try:
            yield None
        finally:
            self._sessions -= 1
            if self._sessions == 0:
                owned, self._owned_upstream, self._executor = self._owned_upstream, None, None
                if owned is not None:
                    await owned.aclose()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Hold the shared upstream client and executor open (a host mounting the server runs this
        around its own lifespan; transports entering the lifespan meanwhile share them)."""
        async with self._lifespan(self.mcp):
            yield

    def caller(self) -> Caller | None:
        """The authenticated caller of the current MCP request, if the host identifies one."""
        return self._access() if self._access is not None else None

    def executor(self) -> Executor:
        if self._executor is None:
            raise ConfigError("the server is not running (no lifespan)", code="config.not_running")
        return self._executor

    def _build_mcp(self) -> MCPServer[Any]:
        title, n = self.spec.title, len(self.spec.operations)
        mcp: MCPServer[Any] = MCPServer(
            name=self.settings.name or server_name(title),
            title=f"{title} (codemode)",
            version=__version__,
            instructions=instructions(self.spec),
            lifespan=self._lifespan,
            # The SDK configures the root logger when the application has not (basicConfig): at its
            # default INFO, every upstream request's URL would be logged. The CLI configures logging
            # itself (--debug), so this only matters to programs that embed the library.
            log_level="WARNING",
        )
        mcp.add_tool(
            self.search,
            name="search",
            description=SEARCH_DESCRIPTION.format(title=title, n=n),
            annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
            structured_output=False,
        )
        read_only = self.settings.execute.read_only
        mcp.add_tool(
            self.execute,
            name="execute",
            description=EXECUTE_DESCRIPTION.format(title=title),
            annotations=ToolAnnotations(read_only_hint=read_only, destructive_hint=not read_only, open_world_hint=True),
            structured_output=False,
        )
        for tool in ("search", "execute"):
            registered = mcp._tool_manager.get_tool(tool)
            if registered is not None:
                compact_schema(registered.parameters)
        # logging/setLevel for handshake-era clients (2025-06-18/11-25): accept and record the level. The server
        # sends no log notifications; the SDK keeps this method off the 2026-07-28 surface (SEP-2577).
        mcp._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, self._set_log_level)
        return mcp

    async def _set_log_level(self, _ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        self.client_log_level = params.level
        return EmptyResult()

    # -- the tools -----------------------------------------------------------------------------
    async def search(
        self,
        query: str = "",
        tag: str | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
        detail: str | None = None,
        code: str | None = None,
        limit: Annotated[int | None, Field(ge=1, le=50)] = None,
        ctx: Context | None = None,
    ) -> CallToolResult:
        cfg = self.settings.search
        caller = self.caller()
        if code:
            report = await self.executor().run_search_code(code, client=_session_key(ctx), caller=caller)
            text, is_error = format_execute(report, max_chars=self.settings.execute.max_response_chars)
            return _result(text, is_error)
        if detail:
            return self._detail(detail.strip(), caller)
        n = min(limit or cfg.default_limit, cfg.max_limit)
        answer = answer_search(
            await self.ready_index(), query, tag=tag, method=method, path_prefix=path_prefix, limit=n,
            budget_tokens=cfg.max_response_tokens, denial=caller.denial if caller is not None else None,
        )  # fmt: skip
        return _result(answer.text, answer.is_error)

    def _detail(self, target: str, caller: Caller | None) -> CallToolResult:
        answer = answer_detail(
            self.index, target, budget_chars=self.settings.search.detail_tokens * 4,
            denial=caller.denial if caller is not None else None,
        )  # fmt: skip
        return _result(answer.text, answer.is_error)

    async def execute(
        self,
        code: str,
        dry_run: bool = False,
        ctx: Context | None = None,
    ) -> CallToolResult:
        executor, caller, client = self.executor(), self.caller(), _session_key(ctx)
        if ctx is not None:  # slow steps this call waits for (the first isolate build) reach its client
            with self.progress.subscribed(McpReporter(ctx)):
                report = await executor.execute(code, dry_run=dry_run, caller=caller, client=client)
        else:
            report = await executor.execute(code, dry_run=dry_run, caller=caller, client=client)
        text, is_error = format_execute(report, max_chars=self.settings.execute.max_response_chars)
        return _result(text, is_error)

    # -- transports ----------------------------------------------------------------------------
    def http_app(
        self,
        transport: Literal["sse", "http"] = "http",
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        stateless: bool = False,
        allowed_hosts: tuple[str, ...] = (),
    ) -> ExactHostCheck:
        """The ASGI app of the HTTP transports, behind an exact Host/Origin check (see :mod:`._hostcheck`)."""
        security = transport_security(host, port, allowed_hosts)
        if transport == "sse":
            app: Any = self.mcp.sse_app(transport_security=security, host=host)
        else:
            app = self.mcp.streamable_http_app(
                stateless_http=stateless, json_response=stateless, transport_security=security, host=host
            )
        return ExactHostCheck(app, host=host, port=port, allowed_hosts=allowed_hosts)

    def run(
        self,
        transport: Transport = "stdio",
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        stateless: bool = False,
        allowed_hosts: tuple[str, ...] = (),
        sock: socket.socket | None = None,
    ) -> None:
        """Serve until interrupted. For HTTP transports, ``sock`` is an already bound socket
        (``codemode._listen.listen_socket``); without it the port is bound here, before any
        background work starts."""
        if transport == "stdio":
            import anyio

            from ._stdio import serve_stdio

            self.start_background_work()
            anyio.run(serve_stdio, self.mcp)
            return
        import uvicorn

        from ._listen import listen_socket

        listener = sock if sock is not None else listen_socket(host, port)
        self.start_background_work()
        app = self.http_app(transport, host=host, port=port, stateless=stateless, allowed_hosts=allowed_hosts)
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run(sockets=[listener])


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Shrink a generated input schema in place, meaning unchanged for a client: no ``title`` keys,
    and an optional ``X | None = None`` parameter shown as plain ``X`` (omitting it means None).

    ``tools/list`` is paid on every turn of every conversation; this saves ~100 tokens.
    """
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
        options = prop.get("anyOf")
        if (
            isinstance(options, list)
            and len(options) == 2
            and {"type": "null"} in options
            and prop.get("default", 0) is None
        ):
            (kept,) = [o for o in options if o != {"type": "null"}]
            del prop["anyOf"], prop["default"]
            prop.update(kept)
    return schema


def transport_security(host: str, port: int, allowed_hosts: tuple[str, ...]) -> TransportSecuritySettings:
    """DNS-rebinding protection: only loopback Host/Origin headers, plus any named explicitly."""
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", *allowed_hosts]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    origins += [f"https://{h}" for h in allowed_hosts] + [f"http://{h}" for h in allowed_hosts]
    if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):  # noqa: S104
        hosts.append(f"{host}:{port}")
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def _session_key(ctx: Context | None) -> str | None:
    """The MCP session a tool call belongs to (its fair-share key when no caller is identified)."""
    if ctx is None:
        return None
    try:
        return f"{id(ctx.session):x}"
    except (AttributeError, LookupError, ValueError):
        return None


def _result(text: str, is_error: bool) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=is_error)
