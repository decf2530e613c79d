"""The pages where users manage their own upstream credentials (``/account/credentials``) and the
exact OAuth callback of each per-user server (``/upstream/<name>/callback``).

Every change is a CSRF-protected POST from a signed-in session. The callback and every POST end
on the fixed account page: no redirect target is ever taken from the request.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ._session import BrowserSession
from ._upstream_accounts import REMOVED, CredentialView, LinkError, UpstreamAccounts
from ._web import Web, read_form

__all__ = ["PAGE", "upstream_routes"]

log = logging.getLogger("codemode.portal.upstream")

PAGE = "/account/credentials"
SAVED = {"key": "Saved. Your key is used for your own requests from now on.",
         "linked": "Linked. Your account is used for your own requests from now on."}  # fmt: skip


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(
        url, status_code=303, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def upstream_routes(web: Web, accounts: UpstreamAccounts) -> list[BaseRoute]:
    plans = accounts.plans
    # Chrome applies form-action to the redirect after a form POST: the "Link" forms redirect to the providers.
    link_origins = sorted({_origin(p.link.authorization_url) for p in plans.values() if p.link is not None})

    async def page(session: BrowserSession, *, status: int = 200, message: str | None = None,
                   error: str | None = None) -> Response:  # fmt: skip
        assert session.user is not None
        views: dict[str, CredentialView] = await accounts.views(session.user.id)
        servers: list[dict[str, Any]] = []
        for name, plan in sorted(plans.items()):
            cred = views.get(name)
            label = next((p.label for p in plan.paste if cred is not None and p.scheme == cred.scheme), "")
            link = plan.link
            servers.append({
                "name": name, "title": plan.title, "cred": cred, "cred_label": label or (cred.scheme if cred else ""),
                "updated": _when(cred.updated_at) if cred else "", "paste": plan.paste, "link": link,
                "link_host": urlsplit(link.authorization_url).hostname if link else "",
                "link_scopes": [(s, link.scope_descriptions.get(s, "")) for s in link.scopes] if link else [],
            })  # fmt: skip
        return web.render(session, "credentials.html", status=status, title="Your API credentials", servers=servers,
                          message=message, error=error, form_targets=link_origins)  # fmt: skip

    async def signed_in(request: Request) -> tuple[BrowserSession, Response | None]:
        session = await web.sessions.load(request)
        if session.user is None:
            return session, web.sessions.attach(_see_other(f"/login?next={PAGE}"), session)
        return session, None

    async def checked_post(request: Request) -> tuple[BrowserSession, dict[str, str], Response | None]:
        session = await web.sessions.load(request)
        pairs = await read_form(request)
        if session.user is None:
            return session, {}, web.sessions.attach(_see_other(f"/login?next={PAGE}"), session)
        if pairs is None or not web.sessions.csrf_ok(session, dict(pairs).get("csrf")):
            return session, {}, web.error(session, 403, "Form expired", "The form expired or came from elsewhere.",
                                          "Reload the page and try again.")  # fmt: skip
        name = request.path_params["name"]
        if name not in plans:
            return session, {}, web.error(session, 404, "Not found", "There is no such per-user server.")
        return session, dict(pairs), None

    async def show(request: Request) -> Response:
        session, refused = await signed_in(request)
        if refused is not None:
            return refused
        q = request.query_params
        message = SAVED.get(q.get("saved", "")) or REMOVED.get(q.get("removed", ""))
        return await page(session, message=message)

    async def save_key(request: Request) -> Response:
        session, form, refused = await checked_post(request)
        if refused is not None:
            return refused
        assert session.user is not None
        name = request.path_params["name"]
        try:
            await accounts.paste(session.user.id, name, form.get("scheme", ""), form.get("value", ""))
        except LinkError as exc:
            return await page(session, status=400, error=exc.message)
        return _see_other(f"{PAGE}?saved=key#server-{name}")

    async def remove(request: Request) -> Response:
        session, _, refused = await checked_post(request)
        if refused is not None:
            return refused
        assert session.user is not None
        name = request.path_params["name"]
        outcome = await accounts.remove(session.user.id, name)
        return _see_other(f"{PAGE}?removed={outcome}#server-{name}")

    async def start_link(request: Request) -> Response:
        session, _, refused = await checked_post(request)
        if refused is not None:
            return refused
        assert session.user is not None
        try:
            url = await accounts.start_link(session.user.id, session.value, request.path_params["name"])
        except LinkError as exc:
            return await page(session, status=400, error=exc.message)
        return _see_other(url)

    async def callback(request: Request) -> Response:
        session = await web.sessions.load(request)
        name = request.path_params["name"]
        if name not in plans:
            return web.error(session, 404, "Not found", "There is no such per-user server.")
        if session.user is None:
            return web.error(session, 401, "Signed out", "You were signed out while linking your account.",
                             "Sign in, then start linking again from your API credentials page.")  # fmt: skip
        params = {k: v for k, v in request.query_params.items()}
        try:
            await accounts.finish_link(session.user.id, session.value, name, params)
        except LinkError as exc:
            return await page(session, status=400, error=exc.message)
        return _see_other(f"{PAGE}?saved=linked#server-{name}")

    return [
        Route(PAGE, show, methods=["GET"]),
        Route(PAGE + "/{name}/key", save_key, methods=["POST"]),
        Route(PAGE + "/{name}/delete", remove, methods=["POST"]),
        Route("/upstream/{name}/link", start_link, methods=["POST"]),
        Route("/upstream/{name}/callback", callback, methods=["GET"]),
    ]
