"""``codemode connect`` against a hostile or broken server, and against hostile local programs.

A small fake "portal" on loopback speaks just enough OAuth and MCP to sign the bridge in, then
misbehaves on demand: a sign-in address that is not https, answers far past the size cap (JSON
and one SSE event), a redirect to another origin, a protocol version crafted to inject a header,
a token endpoint that floods. Local attackers: a program holding the registered redirect port, and
two writers racing on the token file. The bridge must refuse each with a clear error, never send
its token anywhere else, and keep working afterwards."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from codemode_portal._connect import ConnectSettings, StoredState, TokenFile
from codemode_portal._connect._run import http_client
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthToken
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from upstreams import free_port

CAP = 64 * 1024


@dataclass
class Fake:
    base: str
    mode: dict[str, Any] = field(default_factory=dict)
    seen: list[dict[str, Any]] = field(default_factory=list)  # every MCP request: headers
    registrations: list[dict[str, Any]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.base}/mcp/x"


def _app(fake: Fake) -> Starlette:
    def rpc(result: dict[str, Any], id_: Any) -> JSONResponse:
        return JSONResponse({"jsonrpc": "2.0", "id": id_, "result": result})

    async def prm(request: Request) -> Response:
        return JSONResponse({"resource": fake.url, "authorization_servers": [fake.base],
                             "scopes_supported": ["x:read"]})  # fmt: skip

    async def asm(request: Request) -> Response:
        endpoint = fake.mode.get("authorization_endpoint", f"{fake.base}/authorize")
        return JSONResponse({
            "issuer": fake.base, "authorization_endpoint": endpoint, "token_endpoint": f"{fake.base}/token",
            "registration_endpoint": f"{fake.base}/register", "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"], "authorization_response_iss_parameter_supported": True,
        })  # fmt: skip

    async def register(request: Request) -> Response:
        body = await request.json()
        fake.registrations.append(body)
        return JSONResponse({**body, "client_id": f"client-{len(fake.registrations)}"}, status_code=201)

    async def authorize(request: Request) -> Response:
        q = request.query_params
        iss = fake.mode.get("iss", fake.base)
        target = f"{q['redirect_uri']}?code=the-code&state={q['state']}&iss={iss}"
        return RedirectResponse(target, status_code=302)

    async def token(request: Request) -> Response:
        form = await request.form()
        if fake.mode.get("token") == "flood":
            return Response(b"{" + b" " * (CAP * 4) + b"}", media_type="application/json")
        if form.get("grant_type") == "refresh_token" and fake.mode.get("refresh") == "refuse":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access = f"at-{len(fake.issued)}"
        fake.issued.append(access)
        return JSONResponse({"access_token": access, "token_type": "Bearer", "expires_in": 3600,
                             "refresh_token": f"rt-{len(fake.issued)}", "scope": "x:read"})  # fmt: skip

    async def mcp(request: Request) -> Response:
        fake.seen.append(dict(request.headers))
        auth = request.headers.get("authorization", "")
        live = fake.issued[-1:]
        if not any(auth == f"Bearer {t}" for t in live):
            challenge = f'Bearer resource_metadata="{fake.base}/.well-known/oauth-protected-resource/mcp/x"'
            return JSONResponse({"error": "invalid_token"}, status_code=401, headers={"www-authenticate": challenge})
        if request.method != "POST":
            return Response(status_code=405)
        msg = await request.json()
        if "id" not in msg:
            return Response(status_code=202)
        behaviour = fake.mode.pop("next", "normal")
        if behaviour == "huge":
            return Response(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"x": "y" * CAP * 2}}),
                            media_type="application/json")  # fmt: skip
        if behaviour == "gzip-bomb":  # 64 KiB on the wire, 64 MiB once inflated
            bomb = gzip.compress(b'{"jsonrpc": "2.0", "id": 1, "result": {"x": "' + b"y" * (1024 * CAP) + b'"}}')
            return Response(bomb, media_type="application/json", headers={"content-encoding": "gzip"})
        if behaviour == "huge-event":
            event = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"x": "y" * CAP * 2}})

            async def events() -> AsyncIterator[bytes]:
                yield f"event: message\ndata: {event}\n\n".encode()

            return StreamingResponse(events(), media_type="text/event-stream")
        if behaviour == "elsewhere":
            return RedirectResponse(f"{fake.mode['elsewhere']}/mcp/x", status_code=307)
        if msg["method"] == "initialize":
            version = fake.mode.get("version", "2025-06-18")
            return rpc({"protocolVersion": version, "capabilities": {"tools": {}},
                        "serverInfo": {"name": "fake", "version": "1"}}, msg["id"])  # fmt: skip
        return rpc({"tools": []}, msg["id"])

    return Starlette(routes=[
        Route("/.well-known/oauth-protected-resource/mcp/x", prm),
        Route("/.well-known/oauth-authorization-server", asm),
        Route("/register", register, methods=["POST"]), Route("/authorize", authorize),
        Route("/token", token, methods=["POST"]), Route("/mcp/x", mcp, methods=["GET", "POST", "DELETE"]),
    ])  # fmt: skip


@contextmanager
def _serve(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def fake() -> Iterator[Fake]:
    holder = Fake(base="")
    with _serve(_app(holder)) as base:
        holder.base = base
        yield holder


class Browser:
    """Follows the sign-in address to the fake's redirect and on to the bridge's listener."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    async def __call__(self, url: str) -> None:
        self.opened.append(url)

        def go() -> None:
            with httpx.Client(trust_env=False, timeout=30) as http:
                answer = http.get(url)
                if answer.status_code == 302:
                    http.get(answer.headers["location"])

        threading.Thread(target=go, daemon=True).start()


def _settings(fake: Fake, tmp_path: Path) -> ConnectSettings:
    return ConnectSettings(url=fake.url, token_dir=tmp_path / "tokens", max_response_bytes=CAP,
                           authorization_timeout=20)  # fmt: skip


@asynccontextmanager
async def _session(fake: Fake, tmp_path: Path, browser: Browser | None = None) -> AsyncIterator[ClientSession]:
    async with http_client(_settings(fake, tmp_path), browser or Browser()) as http:
        async with streamable_http_client(fake.url, http_client=http, max_sse_event_size=CAP) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=60) as session:
                yield session


async def test_a_sign_in_address_that_is_not_https_is_never_opened(fake: Fake, tmp_path: Path) -> None:
    fake.mode["authorization_endpoint"] = "http://portal.example.com/authorize"  # plain http, not loopback
    browser = Browser()
    async with _session(fake, tmp_path, browser) as s:
        with pytest.raises(MCPError, match="not an https URL"):
            await s.initialize()
    assert browser.opened == []


async def test_an_answer_from_another_issuer_is_refused(fake: Fake, tmp_path: Path) -> None:
    fake.mode["iss"] = "https://evil.example"  # RFC 9207: a mix-up attack's answer
    async with _session(fake, tmp_path) as s:
        with pytest.raises(MCPError, match=r"signing in to the portal failed:.*evil\.example"):
            await s.initialize()
    assert fake.issued == []  # the code was never exchanged


async def test_answers_past_the_cap_are_refused_and_the_bridge_goes_on(fake: Fake, tmp_path: Path) -> None:
    async with _session(fake, tmp_path) as s:
        await s.initialize()
        fake.mode["next"] = "huge"
        with pytest.raises(MCPError, match=f"larger than {CAP} bytes"):
            await s.list_tools()
        fake.mode["next"] = "gzip-bomb"
        with pytest.raises(MCPError, match="compressed"):
            await s.list_tools()
        assert all(h.get("accept-encoding") == "identity" for h in fake.seen)
        fake.mode["next"] = "huge-event"
        with pytest.raises(MCPError, match="SSE stream failed"):
            await s.list_tools()
        assert (await s.list_tools()).tools == []  # and the next request works


async def test_a_redirect_to_another_origin_is_not_followed_and_the_token_stays(fake: Fake, tmp_path: Path) -> None:
    elsewhere: list[dict[str, str]] = []

    async def record(request: Request) -> Response:
        elsewhere.append(dict(request.headers))
        return JSONResponse({})

    with _serve(Starlette(routes=[Route("/mcp/x", record, methods=["GET", "POST"])])) as other:
        fake.mode["elsewhere"] = other
        async with _session(fake, tmp_path) as s:
            await s.initialize()
            fake.mode["next"] = "elsewhere"
            with pytest.raises(MCPError, match="not followed"):
                await s.list_tools()
            assert (await s.list_tools()).tools == []
    assert elsewhere == []


async def test_a_crafted_protocol_version_injects_no_header(fake: Fake, tmp_path: Path) -> None:
    fake.mode["version"] = "2025-06-18\r\nX-Injected: 1"
    async with _session(fake, tmp_path) as s:
        with pytest.raises(Exception):  # noqa: B017 - the client itself refuses the version
            await s.initialize()
    # the bridge's own header logic, fed the same answer, ignores it
    from codemode_portal._connect import Headers
    from mcp.shared.message import SessionMessage
    from mcp_types import JSONRPCRequest, JSONRPCResponse

    h = Headers()
    h.outgoing(SessionMessage(JSONRPCRequest(jsonrpc="2.0", id=1, method="initialize", params={})))
    h.incoming(SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=1, result={"protocolVersion": fake.mode["version"]})))
    after = h.outgoing(SessionMessage(JSONRPCRequest(jsonrpc="2.0", id=2, method="tools/list")))
    assert after.metadata is None


async def test_a_flooding_token_endpoint_stores_nothing(fake: Fake, tmp_path: Path) -> None:
    fake.mode["token"] = "flood"
    async with _session(fake, tmp_path) as s:
        with pytest.raises(MCPError, match=f"larger than {CAP} bytes"):
            await s.initialize()
    state = _settings(fake, tmp_path).token_file.load()
    assert state.tokens is None


async def test_a_program_holding_the_registered_port_means_a_new_registration(fake: Fake, tmp_path: Path) -> None:
    async with _session(fake, tmp_path) as s:
        await s.initialize()
    (first,) = fake.registrations
    port = int(first["redirect_uris"][0].rsplit(":", 1)[1].split("/")[0])
    fake.mode["refresh"] = "refuse"
    fake.issued.append("at-other")  # the stored token is not live any more: a new sign-in is needed
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen(1)
    try:
        async with _session(fake, tmp_path) as s:
            await s.initialize()
        assert len(fake.registrations) == 2
        assert fake.registrations[1]["redirect_uris"][0] != first["redirect_uris"][0]
        stored = _settings(fake, tmp_path).token_file.load()
        assert stored.client is not None and stored.client.client_id == "client-2"
    finally:
        squatter.close()


def test_racing_writers_never_leave_a_broken_file(tmp_path: Path) -> None:
    file = TokenFile("https://p.example/mcp/x", tmp_path / "t.json")
    states = [StoredState(tokens=OAuthToken(access_token=f"at-{i}" * 50, expires_in=60)) for i in range(2)]
    stop = time.monotonic() + 2
    problems: list[str] = []

    def write(state: StoredState) -> None:
        while time.monotonic() < stop:
            file.save(state)

    def read() -> None:
        while time.monotonic() < stop:
            loaded = file.load()
            if loaded.tokens is not None and loaded.tokens.access_token not in ("at-0" * 50, "at-1" * 50):
                problems.append(loaded.tokens.access_token[:20])

    threads = [threading.Thread(target=write, args=(s,)) for s in states] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []
    assert not list(tmp_path.glob("*.corrupt-*")) and not list(tmp_path.glob(".*.tmp"))
