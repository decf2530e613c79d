"""CORS for browser-based MCP clients (the MCP Inspector's web UI, web apps), on the endpoints they
call with ``fetch``: the OAuth metadata, ``/register``, ``/token``, ``/revoke``, and every
``/mcp/<name>`` and ``/sse/<name>``.

What makes ``Access-Control-Allow-Origin: *`` safe there: none of those endpoints reads a cookie
or any other ambient credential. They are authenticated by what the request itself carries (a
bearer token, a client secret, a code and its PKCE verifier), which a hostile page does not have.
``Access-Control-Allow-Credentials`` is never sent, so a browser never exposes a response to a
request made with the user's cookies.

What stays as it was:

* the pages (``/``, ``/login``, ``/authorize``, ``/account…``, ``/upstream/…``) get no CORS header
  at all: they use the session cookie, and their forms are CSRF-protected;
* a preflight (``OPTIONS``) is answered here, before the token check (it carries no token), but the
  request that follows is checked as before: token, audience, scope, and the SDK's Host/Origin
  check on ``/mcp`` and ``/sse`` (DNS-rebinding protection);
* Private Network Access preflights (a public site reaching a portal on a private address) are
  refused.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["CORS_EXPOSED", "CORS_HEADERS", "ApiCors", "is_api_path"]

CORS_HEADERS = ("Authorization", "Content-Type", "Accept", "Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-ID")
CORS_EXPOSED = ("WWW-Authenticate", "Mcp-Session-Id", "Mcp-Protocol-Version", "Retry-After")
CORS_MAX_AGE = 600
_EXACT = frozenset({"/token", "/revoke", "/register"})
_PREFIXES = (
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-protected-resource",
    "/mcp/",
    "/sse/",
)


def is_api_path(path: str) -> bool:
    """True for the endpoints a browser-based client calls cross-origin (never a page)."""
    return path in _EXACT or path.startswith(_PREFIXES)


class ApiCors:
    """ASGI middleware: Starlette's ``CORSMiddleware`` (any origin, no credentials) on the API paths
    only; every other path passes through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=["*"],
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=CORS_HEADERS,
            allow_credentials=False,
            allow_private_network=False,
            expose_headers=CORS_EXPOSED,
            max_age=CORS_MAX_AGE,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_api_path(scope.get("path", "")):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
