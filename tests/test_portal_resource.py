"""The resource-server side: every /mcp/<name> and /sse/<name> checks the bearer token on every
request (audience, expiry, revocation, scope), answers with RFC 6750/9728 challenges, and hands
the caller to the tool handlers, per request, over stateful and stateless streamable HTTP and SSE."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal._crypto import ACCESS_PREFIX, new_token, token_hash
from codemode_portal._store import TokenRecord
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from portal_harness import PETSTORE, Flow, RunningPortal, running_portal

SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"

[servers.other]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"

[servers.broken]
spec = "/nonexistent/spec.yaml"
"""
ACCEPT = {"Accept": "application/json, text/event-stream"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


@pytest.fixture(scope="module", params=["stateful", "stateless"])
def portal(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    extra = "registrations_per_ip_hour = 10000\n" + ("stateless = true\n" if request.param == "stateless" else "")
    with running_portal(tmp_path_factory.mktemp("portal"), SERVERS, portal=extra) as running:
        yield running


@pytest.fixture
def flow(portal: RunningPortal) -> Iterator[Flow]:
    with Flow(portal) as f:
        f.register()
        yield f


def post(portal: RunningPortal, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
    headers = {**ACCEPT, **({"Authorization": f"Bearer {token}"} if token else {}), **kw.pop("headers", {})}
    with portal.http() as http:
        return http.post(path, json=INIT, headers=headers, **kw)


def forge(portal: RunningPortal, like: str, **changes: Any) -> str:
    """A new access token in the store, copied from a real one with some fields changed."""
    store = portal.portal.store
    view = store.find_token(token_hash(like))
    assert view is not None
    secret = new_token(ACCESS_PREFIX)
    fields = {**view.token.__dict__, "hash": token_hash(secret), **changes}
    store.save_tokens(TokenRecord(**fields))
    return secret


def challenge(r: httpx.Response) -> str:
    return r.headers.get("www-authenticate", "")


def test_tokens_are_checked_on_every_request(flow: Flow, portal: RunningPortal) -> None:
    tok = flow.tokens()["access_token"]
    assert post(portal, "/mcp/petstore", tok).status_code == 200
    cases = {
        "malformed": "not-a-token",
        "unknown": new_token(ACCESS_PREFIX),
        "expired": forge(portal, tok, expires_at=time.time() - 1),
        "other server": forge(portal, tok, server="other"),
        "other resource URL": forge(portal, tok, resource="https://elsewhere.example/mcp/petstore"),
        "huge": ACCESS_PREFIX + "a" * 5000,
    }
    for why, bad in cases.items():
        r = post(portal, "/mcp/petstore", bad)
        assert r.status_code == 401, why
        assert 'error="invalid_token"' in challenge(r), why
        assert "resource_metadata=" in challenge(r), why
    refresh = flow.tokens()["refresh_token"]
    r = post(portal, "/mcp/petstore", refresh)  # a refresh token is not an access token
    assert r.status_code == 401


def test_scope_and_header_rules(flow: Flow, portal: RunningPortal) -> None:
    tok = flow.tokens()["access_token"]
    write_only = forge(portal, tok, scopes=("petstore:write",))
    r = post(portal, "/mcp/petstore", write_only)
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in challenge(r) and 'scope="petstore:read"' in challenge(r)
    in_query = post(portal, "/mcp/petstore", params={"access_token": tok})
    assert in_query.status_code == 400 and 'error="invalid_request"' in challenge(in_query)
    basic = post(portal, "/mcp/petstore", headers={"Authorization": "Basic YTpi"})
    assert basic.status_code == 401
    with portal.http() as http:
        two = http.post("/mcp/petstore", json=INIT, headers=[("Accept", ACCEPT["Accept"]),
                        ("Authorization", f"Bearer {tok}"), ("Authorization", f"Bearer {tok}")])
    assert two.status_code == 401
    assert post(portal, "/mcp/nope", tok).status_code == 404
    assert post(portal, "/mcp/petstore/extra", tok).status_code == 404
    broken = post(portal, "/mcp/broken", tok)
    assert broken.status_code == 503 and "/nonexistent" not in broken.text
    sse_other = post(portal, "/sse/other/messages/", tok)  # audience on the SSE side too
    assert sse_other.status_code == 401


def test_revocation_takes_effect_on_the_next_request(flow: Flow, portal: RunningPortal) -> None:
    tok = flow.tokens()
    assert post(portal, "/mcp/petstore", tok["access_token"]).status_code == 200
    portal.portal.store.revoke_grant(portal.portal.store.find_token(token_hash(tok["access_token"])).token.grant_id,
                                     time.time())  # type: ignore[union-attr]
    assert post(portal, "/mcp/petstore", tok["access_token"]).status_code == 401


def test_healthz_reports_each_server(portal: RunningPortal) -> None:
    with portal.http() as http:
        h = http.get("/healthz").json()
    assert h["database"] == "ok" and h["status"] == "degraded"
    assert h["servers"]["petstore"]["ok"] is True and h["servers"]["petstore"]["operations"] == 19
    assert h["servers"]["broken"]["ok"] is False and "spec not found" in h["servers"]["broken"]["error"]


class Bearer(httpx2.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, Any, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


@asynccontextmanager
async def session(portal: RunningPortal, transport: str, auth: Bearer) -> AsyncIterator[ClientSession]:
    if transport == "sse":
        async with sse_client(f"{portal.base}/sse/petstore", auth=auth) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                await s.initialize()
                yield s
    else:
        async with httpx2.AsyncClient(auth=auth, timeout=60) as http:
            async with streamable_http_client(f"{portal.base}/mcp/petstore", http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as s:
                    await s.initialize()
                    yield s


def _text(result: Any) -> str:
    return "".join(c.text for c in result.content if hasattr(c, "text"))


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_identity_reaches_the_tool_handler_per_request(flow: Flow, portal: RunningPortal, transport: str) -> None:
    narrow = flow.tokens(scope="petstore:read")["access_token"]
    full = flow.tokens()["access_token"]
    auth = Bearer(narrow)
    async with session(portal, transport, auth) as s:
        hits = _text(await s.call_tool("search", {"query": "add a new pet to the store"}))
        assert "[not callable: needs scope petstore:write" in hits
        ran = await s.call_tool("execute", {"code": "api.pet.add(name='x', photoUrls=[])"})
        assert ran.is_error and "PermissionError" in _text(ran) and "petstore:write" in _text(ran)
        auth.token = full  # the same session, the next request with another grant of the same user and client
        hits = _text(await s.call_tool("search", {"query": "add a new pet to the store"}))
        assert "not callable" not in hits
        ran = await s.call_tool("execute", {"code": "api.pet.add(name='x', photoUrls=[])"})
        assert "PermissionError" not in _text(ran) and "ApiError" in _text(ran), _text(ran)  # unreachable upstream
    portal.portal.audit.flush()
    calls = [r for r in portal.portal.store.list_audit() if r.event == "upstream_call" and r.operation == "pet.add"]
    assert calls and calls[-1].user_id == portal.portal.store.find_user("admin").id  # type: ignore[union-attr]
    assert calls[-1].client_id == flow.client_id


async def test_a_session_belongs_to_the_principal_that_opened_it(flow: Flow, portal: RunningPortal) -> None:
    mine = flow.tokens()["access_token"]
    portal.portal.users.add("mallory", "mallory-password")
    with Flow(portal) as other:
        other.client_id = flow.client_id
        other.login("mallory", "mallory-password")
        theirs = other.tokens()["access_token"]
    first = post(portal, "/mcp/petstore", mine)
    if portal.portal.config.settings.stateless:  # no session to take over
        assert "mcp-session-id" not in first.headers
        return
    sid = first.headers["mcp-session-id"]
    with portal.http() as http:
        hijack = http.post("/mcp/petstore", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                           headers={**ACCEPT, "Authorization": f"Bearer {theirs}", "mcp-session-id": sid,
                                    "mcp-protocol-version": "2025-06-18"})
    assert hijack.status_code == 404


def test_the_client_token_never_reaches_the_mcp_server(tmp_path: Path) -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    class Spy:
        def open_sessions(self, subject: str) -> int:
            return 0

        async def handle(self, scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["headers"])
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    with running_portal(tmp_path, SERVERS) as running, Flow(running) as f:
        f.register()
        tok = f.tokens()["access_token"]
        running.portal.hosted["petstore"].http = Spy()  # type: ignore[assignment]
        assert post(running, "/mcp/petstore", tok).status_code == 204
    assert seen and all(k != b"authorization" for k, _ in seen[0])
    assert all(tok.encode() not in v for _, v in seen[0])


def test_dns_rebinding_is_refused_even_with_a_valid_token(flow: Flow, portal: RunningPortal) -> None:
    tok = flow.tokens()["access_token"]
    r = post(portal, "/mcp/petstore", tok, headers={"Host": "evil.example.com"})
    assert r.status_code in (400, 421)
    r = post(portal, "/mcp/petstore", tok, headers={"Origin": "http://evil.example.com"})
    assert r.status_code == 403
    assert post(portal, "/mcp/petstore", tok, headers={"Origin": portal.base}).status_code == 200
