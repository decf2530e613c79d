"""The portal's own pages: servers, sign in/out, and the user's grants (with revoke buttons)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ._errors import LoginRefused
from ._web import Web, read_form, safe_next

__all__ = ["page_routes"]

STATIC = Path(__file__).resolve().parent / "static"


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def page_routes(web: Web, server_cards: Callable[[], list[dict[str, Any]]]) -> list[BaseRoute]:
    async def index(request: Request) -> Response:
        session = await web.sessions.load(request)
        return web.render(session, "index.html", title="Servers", servers=server_cards())

    async def login_page(request: Request) -> Response:
        session = await web.sessions.load(request)
        target = safe_next(request.query_params.get("next"))
        if session.user is not None:
            return web.sessions.attach(_see_other(target), session)
        reason = "Sign in to allow an application access." if target.startswith("/authorize") else None
        return web.render(session, "login.html", title="Sign in", next=target, methods=web.login_methods,
                          username="", error=None, reason=reason)  # fmt: skip

    async def login_submit(request: Request) -> Response:
        session = await web.sessions.load(request)
        pairs = await read_form(request)
        if pairs is None:
            return web.error(session, 400, "Bad request", "The sign-in form could not be read.")
        form = dict(pairs)
        target = safe_next(form.get("next"))
        if not web.sessions.csrf_ok(session, form.get("csrf")):
            return web.error(session, 403, "Form expired", "The sign-in form expired or came from elsewhere.",
                             "Reload the page and try again.")  # fmt: skip
        name, password = form.get("username", "")[:100], form.get("password", "")
        address = web.address(request)
        try:
            user = await anyio.to_thread.run_sync(web.users.authenticate, name, password, address)
        except LoginRefused as exc:
            web.audit.record("login_failed", status=exc.code.rsplit(".", 1)[-1], detail=f"user {name[:64]!r}")
            status, headers = (429, {"Retry-After": str(exc.retry_after)}) if exc.retry_after else (401, {})
            return web.render(session, "login.html", status=status, headers=headers, title="Sign in", next=target,
                              methods=web.login_methods, username=name, error=exc.message, reason=None)  # fmt: skip
        web.audit.record("login", user_id=user.id, status="ok")
        fresh = await web.sessions.sign_in(user)
        return web.sessions.attach(_see_other(target), fresh)

    async def logout(request: Request) -> Response:
        session = await web.sessions.load(request)
        pairs = await read_form(request)
        if pairs is None or not web.sessions.csrf_ok(session, dict(pairs).get("csrf")):
            return web.error(session, 403, "Form expired", "The sign-out form expired or came from elsewhere.")
        if session.user is not None:
            web.audit.record("logout", user_id=session.user.id, status="ok")
        return web.sessions.attach(_see_other("/"), await web.sessions.sign_out(session))

    async def account(request: Request) -> Response:
        session = await web.sessions.load(request)
        if session.user is None:
            return web.sessions.attach(_see_other("/login?next=/account"), session)
        store = web.astore.store
        grants = await web.astore.call(store.list_grants, user_id=session.user.id)
        rows = []
        for g in grants:
            client = await web.astore.call(store.find_client, g.client_id)
            rows.append({
                "id": g.id, "client_id": g.client_id, "client_name": client.name if client else g.client_id,
                "server": g.server, "scopes": g.scopes,
                "created": datetime.fromtimestamp(g.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC"),
            })  # fmt: skip
        message = "Access revoked." if request.query_params.get("revoked") else None
        return web.render(session, "account.html", title="Your access", grants=rows, message=message)

    async def revoke_grant(request: Request) -> Response:
        session = await web.sessions.load(request)
        pairs = await read_form(request)
        if session.user is None:
            return web.sessions.attach(_see_other("/login?next=/account"), session)
        if pairs is None or not web.sessions.csrf_ok(session, dict(pairs).get("csrf")):
            return web.error(session, 403, "Form expired", "The form expired or came from elsewhere.")
        grant_id = request.path_params["grant_id"]
        store = web.astore.store
        grant = await web.astore.call(store.get_grant, grant_id)
        if grant is None or grant.user_id != session.user.id:
            return web.error(session, 404, "Not found", "There is no such access to revoke.")
        if await web.astore.call(store.revoke_grant, grant_id, time.time()):
            web.audit.record("grant_revoked", user_id=grant.user_id, client_id=grant.client_id, server=grant.server,
                             status="ok", detail="by the user (account page)")  # fmt: skip
        return web.sessions.attach(_see_other("/account?revoked=1"), session)

    async def stylesheet(request: Request) -> Response:
        headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
        return FileResponse(STATIC / "portal.css", media_type="text/css", headers=headers)

    return [
        Route("/", index, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/account", account, methods=["GET"]),
        Route("/account/grants/{grant_id}/revoke", revoke_grant, methods=["POST"]),
        Route("/static/portal.css", stylesheet, methods=["GET"]),
    ]
