"""The portal as one Starlette app: pages, the authorization server, and every configured server
as its own protected resource. ``build_portal`` wires it; ``serve`` runs it with uvicorn."""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from codemode._listen import listen_socket
from codemode._sandbox import Sandbox

from ._audit import AuditLog
from ._config import PortalConfig, PortalSettings, printable
from ._cors import ApiCors
from ._crypto import SESSION_PREFIX, new_token
from ._errors import StoreError
from ._extras import PortalExtras, build_extras
from ._hosting import CredentialResolver, HostedServer, SharedCredentials, build_servers
from ._oauth import OAuthContext, PortalAuthorizationServer, oauth_routes
from ._pages import page_routes
from ._resource import RETRY_AFTER, UNAVAILABLE, ResourceServer, prm_document, prm_paths
from ._session import BrowserSession, Sessions
from ._store import AsyncStore, SqlStore, Store
from ._users import Users
from ._web import LoginMethod, NavItem, PasswordLogin, PublicPathRedirects, Web

__all__ = ["Portal", "admin_password_path", "build_portal", "purge_once", "serve"]

log = logging.getLogger("codemode.portal")
PURGE_INTERVAL = 3600.0
ADMIN_PASSWORD_FILE = "initial-admin-password"  # noqa: S105 - a file name


@dataclass
class Portal:
    """The running pieces, for the CLI, tests and later extensions."""

    config: PortalConfig
    store: Store
    app: Starlette
    hosted: dict[str, HostedServer]
    audit: AuditLog
    users: Users
    web: Web
    oauth: PortalAuthorizationServer
    admin_password: str | None = None
    admin_password_file: Path | None = None  # where the banner sent it instead (not a terminal)
    extra_routes: list[BaseRoute] = field(default_factory=list)
    extras: PortalExtras = field(default_factory=PortalExtras)

    def banner(self) -> str:
        s = self.config.settings
        lines = [f"codemode portal: issuer {s.issuer} (listening on {s.host}:{s.port})",
                 f"  database: {_redact(self.config.database_url)}"]  # fmt: skip
        width = max((len(n) for n in self.hosted), default=0)
        for name, h in self.hosted.items():
            if h.ok and h.scopes is not None:
                lines.append(f"  {name:<{width}}  {s.resource_url(name)}  (SSE: {s.resource_url(name, 'sse')})")
                lines.append(f"  {'':<{width}}  scopes: {' '.join(h.scopes.supported)}")
            else:  # a problem may quote a remote spec: never raw control characters on the terminal
                lines.append(f"  {name:<{width}}  NOT SERVED: {printable(h.problem or '')}")
        if not self.hosted:
            lines.append("  no servers configured: add [servers.<name>] tables to the config")
        lines += [f"  WARNING: {printable(w)}" for w in self.extras.warnings]
        if self.admin_password and self.admin_password_file is not None:
            lines.append(f"first start: created user 'admin'; its password is in {self.admin_password_file}")
            lines.append("  (readable by you only; sign in, then change it with `codemode portal user passwd admin`,"
                         " which deletes the file)")  # fmt: skip
        elif self.admin_password:
            lines.append(f"first start: created user 'admin' with password {self.admin_password}")
            lines.append("  (shown once; change it with `codemode portal user passwd admin`)")
        return "\n".join(lines)

    def keep_admin_password_out_of(self, stream: TextIO) -> None:
        """When the banner goes anywhere but a terminal (a log file, journald, ``docker logs``), the
        first-start password goes to a 0600 file instead: a log is kept, copied and read by others."""
        if not self.admin_password or _is_terminal(stream):
            return
        path = admin_password_path(self.config)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(self.admin_password + "\n")
        self.admin_password_file = path


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def admin_password_path(config: PortalConfig) -> Path:
    """Where a first-start admin password goes when there is no terminal: beside the SQLite file,
    else in ``data_dir``."""
    url = config.database_url
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).parent / ADMIN_PASSWORD_FILE
    return config.data_dir / ADMIN_PASSWORD_FILE


def _redact(url: str) -> str:
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, creds = head.partition("://")
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{tail}" if ":" in creds else url


def build_portal(
    config: PortalConfig,
    *,
    store: Store | None = None,
    resolver: CredentialResolver | None = None,
    login_methods: Sequence[LoginMethod] = (),
    nav_extra: Sequence[NavItem] = (),
    extra_routes: Sequence[BaseRoute] = (),
    sandbox: Sandbox | None = None,
    env: Mapping[str, str] | None = None,
    create_admin: bool = True,
) -> Portal:
    """Everything wired. ``extra_routes``/``login_methods``/``nav_extra``/``resolver`` are the seams for
    per-user credentials and delegated login."""
    settings = config.settings
    if store is None:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        store = SqlStore(config.database_url)
    astore = AsyncStore(store)
    audit = AuditLog(store)
    users = Users(store, settings)
    admin_password = users.ensure_admin() if create_admin else None
    hosted = build_servers(config, audit=audit, sandbox=sandbox, env=env)
    extras = build_extras(config, hosted, astore, audit, os.environ if env is None else env)
    running = {n: h.scopes for n, h in hosted.items() if h.ok and h.scopes is not None}
    ctx = OAuthContext(settings=settings, store=store, audit=audit, servers=running)
    oauth = PortalAuthorizationServer(ctx)
    key = store.get_or_create_secret("csrf_key", secrets.token_urlsafe(32))
    web = Web(settings=settings, astore=astore, sessions=Sessions(astore, settings, key), users=users, audit=audit,
              login_methods=[PasswordLogin(), *extras.login_methods(), *login_methods],
              nav_extra=[*extras.nav(), *nav_extra])  # fmt: skip
    resource = ResourceServer(settings, astore, hosted, resolver or extras.resolver or SharedCredentials())

    def cards() -> list[dict[str, Any]]:
        return [
            {"name": n, "ok": h.ok, "description": h.entry.description if h.entry else "", "problem": h.problem,
             "mcp_url": settings.resource_url(n), "sse_url": settings.resource_url(n, "sse"),
             "scopes": h.scopes.supported if h.scopes else ()}
            for n, h in hosted.items()
        ]  # fmt: skip

    async def healthz(request: Request) -> Response:
        try:
            await astore.call(store.ping)
            db = "ok"
        except Exception as exc:  # noqa: BLE001 - any database failure is reported, never raised
            db = f"error: {type(exc).__name__}"
        servers = {
            n: ({"ok": True, "title": h.title, "operations": len(h.server.spec.operations)} if h.ok and h.server
                else {"ok": False, "error": h.problem})
            for n, h in hosted.items()
        }  # fmt: skip
        status = "ok" if db == "ok" and all(v["ok"] for v in servers.values()) else "degraded"
        return JSONResponse({"status": status if db == "ok" else "error", "database": db, "servers": servers},
                            status_code=200 if db == "ok" else 503, headers={"Cache-Control": "no-store"})  # fmt: skip

    def prm_routes() -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        ok = [h for h in hosted.values() if h.ok]
        for h in ok:
            for transport in ("mcp", "sse"):
                doc = prm_document(settings, h, transport)

                async def prm(request: Request, doc: dict[str, Any] = doc) -> Response:
                    return JSONResponse(doc, headers={"Cache-Control": "public, max-age=300"})

                routes += [Route(p, prm, methods=["GET"]) for p in prm_paths(settings, transport, h.name)]
        if len(ok) == 1:  # the root form, where it is unambiguous
            only = prm_document(settings, ok[0], "mcp")

            async def root_prm(request: Request) -> Response:
                return JSONResponse(only, headers={"Cache-Control": "public, max-age=300"})

            routes.append(Route("/.well-known/oauth-protected-resource", root_prm, methods=["GET"]))
        return routes

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for h in hosted.values():
                if h.ok and h.server is not None and h.http is not None and h.sse is not None:
                    h.server.start_background_work()
                    await stack.enter_async_context(h.http.lifespan())
                    await stack.enter_async_context(h.sse.lifespan())
            async with anyio.create_task_group() as tg:
                tg.start_soon(audit.run)
                tg.start_soon(_purge, store, settings)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()

    routes: list[BaseRoute] = [
        *page_routes(web, cards),
        *oauth_routes(web, oauth, lambda n: hosted[n].title),
        *prm_routes(),
        Route("/healthz", healthz, methods=["GET"]),
        *extras.routes(web),
        *extra_routes,
        Mount("/mcp", app=_Rooted(resource, "/mcp")),
        Mount("/sse", app=_Rooted(resource, "/sse")),
    ]

    async def store_unavailable(request: Request, exc: Exception) -> Response:
        """The database is down: 503 with Retry-After, as JSON for clients, as a page for people."""
        log.warning("the database is unavailable: %s", exc)
        headers = {"Retry-After": str(RETRY_AFTER), "Cache-Control": "no-store"}
        path = request.url.path
        if path.startswith(("/token", "/revoke", "/register", "/mcp/", "/sse/", "/.well-known/")) or "json" in (
            request.headers.get("accept", "")
        ):
            return JSONResponse(UNAVAILABLE, status_code=503, headers=headers)
        blank = BrowserSession(new_token(SESSION_PREFIX), None, False)  # no store needed, no cookie set
        return web.render(blank, "error.html", status=503, headers=headers, title="Temporarily unavailable",
                          heading="Temporarily unavailable", message="The portal cannot reach its database.",
                          detail="Nothing was changed. Try again in a few seconds.")  # fmt: skip

    middleware = [Middleware(ApiCors), Middleware(PublicPathRedirects, base_path=settings.base_path)]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                    exception_handlers={StoreError: store_unavailable})  # fmt: skip
    return Portal(config=config, store=store, app=app, hosted=hosted, audit=audit, users=users, web=web, oauth=oauth,
                  admin_password=admin_password, extra_routes=list(extra_routes), extras=extras)  # fmt: skip


class _Rooted:
    """Gives the resource server the full path back (Starlette's Mount strips its prefix)."""

    def __init__(self, app: ResourceServer, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if not path.startswith(self.prefix + "/"):
            path = self.prefix + path
        await self.app({**scope, "path": path, "root_path": ""}, receive, send)


def purge_once(store: Store, settings: PortalSettings, now: float | None = None) -> int:
    """One round of housekeeping with the configured retention (see ``Store.purge``)."""
    now = time.time() if now is None else now
    audit_before = now - settings.audit_retention_days * 86_400 if settings.audit_retention_days else None
    return store.purge(now, unused_clients_before=now - settings.unused_client_days * 86_400, audit_before=audit_before)


async def _purge(store: Store, settings: PortalSettings) -> None:
    while True:
        await anyio.sleep(PURGE_INTERVAL)
        try:
            removed = await anyio.to_thread.run_sync(purge_once, store, settings)
            log.debug("purged %d expired rows", removed)
        except Exception:  # the next round retries
            log.exception("purging expired rows failed")


def serve(config: PortalConfig, *, out: TextIO | None = None) -> None:
    """Run the portal in the foreground (uvicorn)."""
    import uvicorn

    s = config.settings
    # The port first (one line for a busy port, issue 6): before the database, the admin user and
    # every hosted server's background work (native threads must not meet a dying interpreter).
    sock = listen_socket(s.host, s.port)
    with sock:
        portal = build_portal(config)
        stream = out or sys.stderr
        portal.keep_admin_password_out_of(stream)
        print(portal.banner(), file=stream, flush=True)
        uvicorn.Server(uvicorn.Config(
            portal.app, host=s.host, port=s.port, log_level="warning", proxy_headers=s.trust_forwarded_for,
            forwarded_allow_ips="*" if s.trust_forwarded_for else None, server_header=False,
        )).run(sockets=[sock])  # fmt: skip
