"""Running a portal with per-user upstream credentials or OpenID Connect sign-in against the test
OAuth provider, and driving it the way a browser and an MCP client would (shared by the tests of
tests/test_portal_upstream_e2e.py, test_portal_oidc.py and test_portal_upstream_attacks.py)."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
from idp import OAuthClient, OAuthProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from portal_harness import Flow, RunningPortal, form_fields, forms, post_form, running_portal

__all__ = [
    "ME",
    "ME_OR_ERROR",
    "OIDC_SECRET_VAR",
    "SECRET_VAR",
    "execute",
    "link",
    "mcp_token",
    "notes_portal",
    "oidc_portal",
    "sign_in",
    "sign_in_at_provider",
    "signed_in_as",
    "to_provider",
]

SECRET_VAR = "NOTES_CLIENT_SECRET"
OIDC_SECRET_VAR = "OIDC_CLIENT_SECRET"
ME = "result = api.call('getMe')"
ME_OR_ERROR = "try:\n    result = api.call('getMe')\nexcept ApiError as e:\n    result = {'error': str(e)}\n"


class Bearer(httpx2.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, Any, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def servers_toml(idp: OAuthProvider, client_id: str) -> str:
    return f"""
[servers.notes]
spec = "{idp.openapi_url}"
upstream_auth = "per-user"

[servers.notes.upstream_oauth]
client_id = "{client_id}"
client_secret = "{SECRET_VAR}"
"""


@asynccontextmanager
async def notes_portal(
    tmp_path: Path, idp: OAuthProvider, *, ttl: int | None = None, sandbox: Any = None
) -> AsyncIterator[tuple[RunningPortal, OAuthClient]]:
    """A portal serving the provider's notes API per user, and its client registration there."""
    client_id, secret = f"portal-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    with running_portal(tmp_path, servers_toml(idp, client_id), env={SECRET_VAR: secret}, sandbox=sandbox) as portal:
        callback = f"{portal.base}/upstream/notes/callback"
        client = idp.register_client([callback], client_id=client_id, client_secret=secret,
                                     scope="notes:read notes:write", access_token_ttl=ttl)  # fmt: skip
        for name in ("alice", "bob"):
            portal.portal.users.add(name, f"{name}-portal-password")
        yield portal, client


def sign_in(portal: RunningPortal, name: str) -> Flow:
    flow = Flow(portal)
    assert flow.login(name, f"{name}-portal-password").status_code == 303
    return flow


def link(flow: Flow, idp: OAuthProvider, username: str) -> httpx.Response:
    """Press "Link" on the credentials page, sign in and consent at the provider, follow the callback."""
    page = flow.browser.get("/account/credentials")
    assert page.status_code == 200, page.text
    form = next(f for f in forms(page.text) if f["action"] == "/upstream/notes/link")
    started = post_form(flow.browser, form["action"], form_fields(form))
    assert started.status_code == 303 and started.headers["location"].startswith(idp.authorization_endpoint)
    back = idp.login_and_consent(started.headers["location"], username)
    assert back.startswith(f"{flow.portal.base}/upstream/notes/callback?"), back
    return flow.browser.get(back)


def mcp_token(flow: Flow, scope: str = "notes:read") -> str:
    flow.register()
    token: str = flow.tokens(resource=f"{flow.portal.base}/mcp/notes", scope=scope)["access_token"]
    return token


async def execute(portal: RunningPortal, token: str, code: str) -> dict[str, Any]:
    async with httpx2.AsyncClient(auth=Bearer(token), timeout=120) as http:
        async with streamable_http_client(f"{portal.base}/mcp/notes", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                await s.initialize()
                ran = await s.call_tool("execute", {"code": code})
    text = "".join(c.text for c in ran.content if hasattr(c, "text"))
    return {"is_error": ran.is_error, "text": text, **(json.loads(text) if not ran.is_error else {})}


def oidc_portal(tmp_path: Path, idp: OAuthProvider, *, create_users: bool, extra: str = "") -> Any:
    """A running portal whose [portal.oidc] is the provider (its client registered once the port is known)."""
    client_id, secret = f"portal-login-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    create = "true" if create_users else "false"
    table = (f'\n[portal.oidc]\nissuer = "{idp.issuer}"\nclient_id = "{client_id}"\n'
             f'client_secret = "{OIDC_SECRET_VAR}"\ncreate_users = {create}\n{extra}')  # fmt: skip
    tmp_path.mkdir(parents=True, exist_ok=True)
    cm = running_portal(tmp_path, "", portal=table, env={OIDC_SECRET_VAR: secret})

    class _Ctx:
        def __enter__(self) -> RunningPortal:
            self.portal = cm.__enter__()
            idp.register_client([f"{self.portal.base}/login/oidc/callback"], client_id=client_id, client_secret=secret,
                                scope="openid profile email")  # fmt: skip
            return self.portal

        def __exit__(self, *exc: Any) -> None:
            cm.__exit__(*exc)

    return _Ctx()


def to_provider(flow: Flow, next_url: str = "/account") -> str:
    """From the login page's button to the provider: the authorization URL the portal redirects to."""
    page = flow.browser.get("/login", params={"next": next_url})
    assert page.status_code == 200
    assert "Sign in with 127.0.0.1" in page.text and 'action="/login"' in page.text  # beside the password form
    start = flow.browser.get("/login/oidc", params={"next": next_url})
    assert start.status_code == 303, start.text
    return start.headers["location"]


def sign_in_at_provider(flow: Flow, idp: OAuthProvider, username: str, next_url: str = "/account") -> Any:
    url = to_provider(flow, next_url)
    assert url.startswith(idp.authorization_endpoint)
    q = parse_qs(urlsplit(url).query)
    assert q["code_challenge_method"] == ["S256"] and q["nonce"] and q["state"]
    assert q["redirect_uri"] == [f"{flow.portal.base}/login/oidc/callback"]
    back = idp.login_and_consent(url, username)
    assert back.startswith(f"{flow.portal.base}/login/oidc/callback?"), back
    return flow.browser.get(back)


def signed_in_as(flow: Flow) -> str | None:
    """The user name the portal's navigation shows ("Sign out NAME"), or None when signed out."""
    page = flow.browser.get("/account")
    if page.status_code != 200 or "Sign out " not in page.text:
        return None
    return page.text.split("Sign out ", 1)[1].split("<", 1)[0].strip()
