"""``/login/oidc`` (to the provider) and ``/login/oidc/callback`` (back, signed in)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ._oidc import OidcLogin, OidcRefused
from ._web import Web, safe_next

__all__ = ["oidc_routes"]


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(
        url, status_code=303, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


def oidc_routes(web: Web, login: OidcLogin) -> list[BaseRoute]:
    async def start(request: Request) -> Response:
        session = await web.sessions.load(request)
        target = safe_next(request.query_params.get("next"))
        if session.user is not None:
            return web.sessions.attach(_see_other(target), session)
        try:
            url = await login.start(session.value, target, web.address(request))
        except OidcRefused as exc:
            return web.error(session, 503, "Sign-in unavailable", exc.message)
        return web.sessions.attach(_see_other(url), session)  # the flow is bound to this (new) cookie

    async def callback(request: Request) -> Response:
        session = await web.sessions.load(request)
        params = {k: v for k, v in request.query_params.items()}
        try:
            user, target = await login.finish(session.value, params)
        except OidcRefused as exc:
            return web.error(session, 400, "Not signed in", exc.message,
                             "Go back to the sign-in page and try again.")  # fmt: skip
        fresh = await web.sessions.sign_in(user)
        return web.sessions.attach(_see_other(safe_next(target)), fresh)

    return [
        Route(login.start_url, start, methods=["GET"]),
        Route(login.start_url + "/callback", callback, methods=["GET"]),
    ]
