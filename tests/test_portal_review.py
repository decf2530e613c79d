"""An independent adversarial review of the portal: what an attacker or a confused user tried
beyond the black-box authorization suite, over real HTTP against running portals. Each case that
broke something is named for what it broke; the fix landed with it.

Themes: secrets (logs, public pages), cross-user and cross-server isolation, sessions and
operators' account controls, CORS for browser-based MCP clients, operational abuse.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import json
import logging
import os
import pty
import re
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from starlette.routing import Route

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from authz_kit import DocServer
from codemode_portal._app import purge_once
from idp import OAuthProvider
from portal_extras_harness import ME, Bearer, execute, mcp_token, notes_portal, sign_in
from portal_harness import (
    PETSTORE,
    Flow,
    RunningPortal,
    form_fields,
    forms,
    location_params,
    pkce,
    post_form,
    running_portal,
)
from upstreams import free_port

from codemode import Caller, SpecError, load_spec
from codemode import _loader as loader
from codemode._sandbox import LocalSandbox, WasmSandbox
from codemode._server import CodemodeServer
from codemode._settings import ServerSettings
from codemode._upstream import HttpxUpstream, UpstreamRequest, UpstreamSettings

QUERY_KEY_SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "Echo", "version": "1"},
    "components": {"securitySchemes": {"key": {"type": "apiKey", "in": "query", "name": "api_key"}}},
    "security": [{"key": []}],
    "paths": {
        "/anything/{what}": {
            "get": {
                "operationId": "echo",
                "parameters": [{"name": "what", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {}}}}},
            }
        }
    },
}


def write_spec(tmp: Path, spec: dict[str, Any] = QUERY_KEY_SPEC) -> Path:
    path = tmp / "echo.json"
    path.write_text(json.dumps(spec))
    return path


class QueryKey:
    """A per-user credential as the portal builds it from a pasted key: an API key in the query,
    read (unsealed) on the first ``apply``, so its secret is known only from then on."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.loaded = False

    async def apply(self, request: UpstreamRequest) -> UpstreamRequest:
        self.loaded = True
        return dataclasses.replace(request, params=[*request.params, ("api_key", self.key)])

    def invalidate_tokens(self, request: UpstreamRequest) -> bool:
        return False

    def secrets(self) -> set[str]:
        return {self.key} if self.loaded else set()

    def reserved(self) -> frozenset[tuple[str, str]]:
        return frozenset({("query", "api_key")})


# -- secrets -------------------------------------------------------------------------------


async def test_a_callers_own_key_is_scrubbed_from_debug_logs(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """``codemode --debug portal``: httpx logged ``GET …?api_key=<the user's pasted key>`` in clear.
    The server's shared key was scrubbed (the process-wide filter knows it); a user's own key was
    not: the execution's log scrubber is built before the first call, when the portal's credential
    source has not read the key yet."""
    spec = load_spec(str(write_spec(tmp_path)))
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    up = UpstreamSettings(base_url="https://echo.test")
    upstream = HttpxUpstream(up, transport=httpx.MockTransport(handler))
    key = "alice-own-key-0123456789"
    caller = Caller(subject="alice", credentials=QueryKey(key))
    server = CodemodeServer(spec, ServerSettings(upstream=up), sandbox=LocalSandbox(), upstream=upstream, env={},
                            access=lambda: caller)  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        async with Client(server.mcp) as client:
            out = await client.call_tool("execute", {"code": "result = api.call('echo', what='x')"})
    assert not out.is_error, out
    assert seen and f"api_key={key}" in str(seen[0].url)  # the key really went out
    assert "HTTP Request: GET https://echo.test/anything/x?api_key=[REDACTED]" in caplog.text, caplog.text
    assert key not in caplog.text


SPEC_PASSWORD, SPEC_TOKEN = "hunter2-spec-password", "spec-token-0123456789"
SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"

[servers.other]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"

[servers.private]
spec = "https://reader:{SPEC_PASSWORD}@127.0.0.1:1/openapi.json?token={SPEC_TOKEN}"
base_url = "http://127.0.0.1:9/api/v3"
"""


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    with running_portal(tmp_path_factory.mktemp("review"), SERVERS, portal="registrations_per_ip_hour = 10000") as p:
        yield p


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "review", "version": "1"}}}  # fmt: skip


def mcp_post(http: httpx.Client, path: str, token: str, body: Any = INIT, **headers: str) -> httpx.Response:
    return http.post(path, json=body, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                               "Accept": "application/json, text/event-stream", **headers})  # fmt: skip


def test_a_spec_urls_credentials_never_reach_healthz_the_index_or_the_banner(portal: RunningPortal) -> None:
    """A private spec fetched with credentials in its URL: when the fetch failed, ``/healthz`` (public,
    unauthenticated) and the index page showed the whole URL, password and token included."""
    with portal.http() as http:
        health = http.get("/healthz")
        index = http.get("/")
    problem = health.json()["servers"]["private"]
    assert problem["ok"] is False and "cannot fetch the spec from https://reader:***@127.0.0.1:1" in problem["error"]
    assert "token=***" in problem["error"]
    for text in (health.text, index.text, portal.portal.banner()):
        assert SPEC_PASSWORD not in text and SPEC_TOKEN not in text


# -- operators' account controls and sessions ------------------------------------------------

CODEMODE = str(Path(sys.executable).with_name("codemode"))


def operator(portal: RunningPortal, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``codemode portal …`` on the running portal's own database, as an operator types it."""
    config = portal.portal.config.path
    assert config is not None
    return subprocess.run([CODEMODE, "portal", *args, "--config", str(config)], input=stdin, capture_output=True,
                          text=True, timeout=120, cwd=config.parent)  # fmt: skip


def new_user(portal: RunningPortal) -> tuple[str, str]:
    name, password = f"user-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    portal.portal.users.add(name, password)
    return name, password


def signed_in(flow: Flow) -> bool:
    return flow.browser.get("/account").status_code == 200


def test_changing_a_password_signs_out_whoever_used_the_old_one(portal: RunningPortal) -> None:
    """A leaked password: the operator changes it, and the thief's browser session stayed signed in
    for its whole lifetime (12 hours by default)."""
    name, password = new_user(portal)
    with Flow(portal) as thief, Flow(portal) as owner:
        assert thief.login(name, password).status_code == 303 and signed_in(thief)
        assert owner.login(name, password).status_code == 303
        out = operator(portal, "user", "passwd", name, "--password-stdin", stdin="a-brand-new-password\n")
        assert out.returncode == 0, out.stderr
        assert "signed out of 2 session(s)" in out.stdout
        assert not signed_in(thief) and not signed_in(owner)
        assert thief.login(name, password).status_code == 401
        assert owner.login(name, "a-brand-new-password").status_code == 303 and signed_in(owner)
    portal.portal.audit.flush()
    rows = [r for r in portal.portal.store.list_audit() if r.event == "password_changed"]
    assert rows and rows[-1].user_id == portal.portal.store.find_user(name).id  # type: ignore[union-attr]


def test_disabling_a_user_cuts_every_session_grant_and_token_at_once(portal: RunningPortal) -> None:
    """There was no way to stop a user: no ``user disable``; ``passwd`` left their browser sessions,
    grants and tokens (refresh tokens live 30 days) working."""
    name, password = new_user(portal)
    with Flow(portal) as flow:
        flow.register()
        assert flow.login(name, password).status_code == 303
        tokens = flow.tokens()
        with portal.http() as http:
            assert mcp_post(http, "/mcp/petstore", tokens["access_token"]).status_code == 200
            out = operator(portal, "user", "disable", name)
            assert out.returncode == 0, out.stderr
            assert "1 grant(s) revoked" in out.stdout
            assert mcp_post(http, "/mcp/petstore", tokens["access_token"]).status_code == 401
        refreshed = flow.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
        assert not signed_in(flow)
        assert flow.login(name, password).status_code == 401  # the same answer as a wrong password
        assert f"{name}\tuser (disabled)" in operator(portal, "user", "list").stdout
        assert operator(portal, "user", "enable", name).returncode == 0
        assert flow.login(name, password).status_code == 303 and signed_in(flow)
        with portal.http() as http:  # revoked stays revoked
            assert mcp_post(http, "/mcp/petstore", tokens["access_token"]).status_code == 401


def test_a_code_or_refresh_token_of_a_disabled_user_gets_no_token(portal: RunningPortal) -> None:
    """The race with ``user disable``: a consent that completed while the operator disabled the user
    left a code (and so a grant) behind the revocation sweep. The token endpoint now asks whether
    the user may still sign in."""
    name, password = new_user(portal)
    with Flow(portal) as flow:
        flow.register()
        assert flow.login(name, password).status_code == 303
        tokens = flow.tokens()
        code, _ = flow.code()
        user = portal.portal.store.find_user(name)
        assert user is not None
        portal.portal.store.set_disabled(user.id, True)  # the flag only: the grants are still live
        try:
            late = flow.exchange(code)
            assert late.status_code == 400 and late.json()["error"] == "invalid_grant", late.text
            refreshed = flow.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
            assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant", refreshed.text
        finally:
            portal.portal.store.set_disabled(user.id, False)


def test_two_portals_on_one_host_keep_their_own_sign_in(portal: RunningPortal, tmp_path: Path) -> None:
    """Browsers send a cookie of 127.0.0.1 to every port: two portals (a staging one beside
    ``make run``) shared ``cmp_session``, so signing in to one signed you out of the other, and a
    consent form left open there then failed as "Form expired"."""
    with running_portal(tmp_path, SERVERS) as second:
        name, password = new_user(portal)
        second.portal.users.add(name, password)
        with httpx.Client(trust_env=False) as browser:  # one browser, one cookie jar for both portals
            for base in (portal.base, second.base):
                page = browser.get(f"{base}/login")
                csrf = dict(form_fields(forms(page.text)[-1]))["csrf"]
                form = {"username": name, "password": password, "csrf": csrf, "next": "/account"}
                assert browser.post(f"{base}/login", data=form).status_code == 303
            assert browser.get(f"{second.base}/account").status_code == 200
            assert browser.get(f"{portal.base}/account").status_code == 200, "signed out of the first portal"


# -- operational abuse -------------------------------------------------------------------------


def user_token(portal: RunningPortal, server: str = "petstore") -> str:
    return user_token_with(portal, server=server)


def user_token_with(portal: RunningPortal, *, server: str = "petstore", scope: str | None = None) -> str:
    name, password = new_user(portal)
    with Flow(portal) as flow:
        flow.register()
        assert flow.login(name, password).status_code == 303
        access: str = flow.tokens(resource=f"{portal.base}/mcp/{server}", scope=scope)["access_token"]
        return access


def test_one_token_cannot_open_sessions_without_bound(tmp_path: Path) -> None:
    """Each streamable-HTTP session holds a task and its streams (about 45 kB measured) until the
    client deletes it or it idles for 30 minutes: one token holder opened 300 in 3 s, and nothing
    stopped them. Now a user holds at most ``max_sessions_per_user`` per server (SSE streams
    included); other users are unaffected, and ending a session frees its place."""
    with running_portal(tmp_path, SERVERS, portal="max_sessions_per_user = 3") as portal:
        alice, bob = user_token(portal), user_token(portal)
        with portal.http() as http:
            opened = [mcp_post(http, "/mcp/petstore", alice) for _ in range(3)]
            assert [r.status_code for r in opened] == [200, 200, 200]
            refused = mcp_post(http, "/mcp/petstore", alice)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
            assert refused.json()["error"] == "too_many_sessions" and "3 open sessions" in refused.text
            assert mcp_post(http, "/mcp/petstore", bob).status_code == 200  # another user is not starved
            sid = opened[0].headers["mcp-session-id"]
            # requests inside an open session are never refused
            ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
            inside = mcp_post(http, "/mcp/petstore", alice, ping, **{"mcp-session-id": sid,
                                                                      "mcp-protocol-version": "2025-06-18"})
            assert inside.status_code == 200, inside.text
            ended = http.delete("/mcp/petstore", headers={"Authorization": f"Bearer {alice}", "mcp-session-id": sid,
                                                          "mcp-protocol-version": "2025-06-18"})  # fmt: skip
            assert ended.status_code == 200
            auth = {"Authorization": f"Bearer {alice}", "Accept": "text/event-stream"}
            with portal.http() as sse, sse.stream("GET", "/sse/petstore", headers=auth) as stream:
                assert stream.status_code == 200  # the third place, taken by an SSE stream
                assert mcp_post(http, "/mcp/petstore", alice).status_code == 429
            deadline = time.monotonic() + 10  # the stream's place is freed once the server sees it closed
            while mcp_post(http, "/mcp/petstore", alice).status_code != 200:
                assert time.monotonic() < deadline, "a closed SSE stream kept its place"
                time.sleep(0.2)


def test_per_address_limits_count_an_ipv6_client_by_its_64(tmp_path: Path) -> None:
    """Registrations and failed sign-ins were counted per exact address: a client with an IPv6 /64
    (what one subscriber usually gets) had 2**64 addresses to rotate through. Behind a proxy
    (``trust_forwarded_for``) the address comes from X-Forwarded-For, as here."""
    extra = "trust_forwarded_for = true\nregistrations_per_ip_hour = 3\nlogin_failures_per_ip = 3\n"
    meta = {"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}
    with running_portal(tmp_path, SERVERS, portal=extra) as portal, portal.http() as http:

        def register(address: str) -> int:
            return http.post("/register", json=meta, headers={"X-Forwarded-For": address}).status_code

        assert [register(f"2001:db8:1:2::{i}") for i in range(1, 4)] == [201, 201, 201]
        assert register("2001:db8:1:2:ffff:ffff:ffff:fffe") == 429  # the same /64
        assert register("2001:db8:1:3::1") == 201  # the next /64 is someone else
        assert [register(a) for a in ("192.0.2.7", "::ffff:192.0.2.7", "192.0.2.7")] == [201, 201, 201]
        assert register("192.0.2.7") == 429  # an IPv4-mapped address is the IPv4 address
        with Flow(portal) as flow:
            page = flow.browser.get("/login")
            csrf = dict(form_fields(forms(page.text)[-1]))["csrf"]
            for i in range(1, 5):
                r = flow.browser.post("/login", headers={"X-Forwarded-For": f"2001:db8:9:9::{i}"},
                                      data={"username": f"nobody{i}", "password": "wrong-password", "csrf": csrf})
                assert r.status_code == (401 if i <= 3 else 429), (i, r.status_code)


def test_what_anyone_can_make_the_portal_store_is_purged(tmp_path: Path) -> None:
    """Storage growth. Without signing in, anyone can make the portal fetch and store a metadata
    document per /authorize (one row per distinct URL, no limit), and register 30 clients an hour
    per address; rows of clients nobody ever authorized stayed forever. Every consent also leaves a
    grant that /account listed as active even after its last token expired."""
    extra = "allow_private_client_metadata_hosts = true\nclient_metadata_cache_seconds = 0\n"
    docs = DocServer()
    try:
        with running_portal(tmp_path, SERVERS, portal=extra) as portal:
            store = portal.portal.store
            for i in range(20):  # anonymous: each request stores a client row
                with Flow(portal) as anonymous:
                    anonymous.client_id = docs.document(f"/c/{i}")
                    page = anonymous.browser.get("/authorize", params=anonymous.authorize_params())
                    assert page.status_code == 303 and page.headers["location"].startswith("/login"), page.text
            with Flow(portal) as used:
                used.client_id = docs.document("/used")
                name, password = new_user(portal)
                assert used.login(name, password).status_code == 303
                used.tokens()
            assert len([c for c in store.list_clients() if c.kind == "cimd"]) == 21
            later = time.time() + 2 * 86_400  # two days on: the access token expired, the refresh token not
            purge_once(store, portal.portal.config.settings, later)
            assert [c.client_id for c in store.list_clients() if c.kind == "cimd"] == [used.client_id]
            grants = store.list_grants(user_id=store.find_user(name).id)  # type: ignore[union-attr]
            assert len(grants) == 1  # its refresh token still works: the grant is live
            with Flow(portal) as dead:  # a consent whose code was never redeemed
                dead.client_id = used.client_id
                assert dead.login(name, password).status_code == 303
                dead.code()
            purge_once(store, portal.portal.config.settings, later + 86_400)
            live = store.list_grants(user_id=store.find_user(name).id)  # type: ignore[union-attr]
            assert [g.id for g in live] == [g.id for g in grants]  # the unredeemed consent is closed
    finally:
        docs.close()


# -- the first-start admin password ------------------------------------------------------------


def test_the_first_start_password_is_shown_on_a_terminal_only(tmp_path: Path) -> None:
    """The banner printed the admin password wherever stderr went: ``make run > portal.log``,
    journald or ``docker logs`` kept it for anyone who reads logs. On a terminal it is still shown
    once (``make run`` stays usable at once); elsewhere it goes to a 0600 file (tests/test_portal_cli)."""
    (tmp_path / "portal.toml").write_text(f'[portal]\nport = {free_port()}\ndata_dir = "data"\n')
    leader, follower = pty.openpty()
    proc = subprocess.Popen([CODEMODE, "portal", "--config", str(tmp_path / "portal.toml")], stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=follower, start_new_session=True)  # fmt: skip
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 120
        while b"(shown once" not in seen:
            assert proc.poll() is None and time.monotonic() < deadline, seen.decode(errors="replace")
            ready, _, _ = select.select([leader], [], [], 1)
            if ready:
                seen += os.read(leader, 4096)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        os.close(leader)
    assert re.search(rb"created user 'admin' with password \S{20,}", seen), seen
    assert not (tmp_path / "data" / "initial-admin-password").exists()


# -- a hostile portal.toml: what its spec URLs can do ----------------------------------------------


class HostileSpecs:
    """Spec URLs on loopback that misbehave: dripping forever, endless, redirecting to a file."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                try:
                    if self.path == "/to-file":
                        self.send_response(302)
                        self.send_header("Location", "file:///etc/passwd")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    if self.path == "/declared-huge":
                        self.send_header("Content-Length", str(10**12))
                        self.end_headers()
                        return
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    part = b'{"openapi": "3.0.3", ' if self.path == "/drip" else b" " * 65536
                    while True:  # never ends: dripping slowly, or streaming fast
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                        self.wfile.flush()
                        time.sleep(0.2 if self.path == "/drip" else 0)
                except (BrokenPipeError, ConnectionResetError):
                    return

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile_specs(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileSpecs]:
    monkeypatch.setattr(loader, "FETCH_DEADLINE", 2.0)
    monkeypatch.setattr(loader, "MAX_SPEC_BYTES", 1_000_000)
    specs = HostileSpecs()
    yield specs
    specs.close()


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``, or a failure (not a hang) when it takes longer than ``seconds``."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(_outcome(fn)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert out, f"still running after {seconds} s"
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # handed to the test thread
        return exc


@pytest.mark.parametrize(("path", "why"), [("/drip", "took longer than 2 s"), ("/endless", "larger than 1,000,000"),
                                            ("/declared-huge", "larger than 1,000,000"),
                                            ("/to-file", "UnsupportedProtocol")])  # fmt: skip
def test_a_spec_url_cannot_hold_up_or_exhaust_the_loader(hostile_specs: HostileSpecs, path: str, why: str) -> None:
    """A spec server that drips its answer held ``load_spec`` (and so the portal's start-up, for every
    server) for ever: httpx's timeout is per read, and a read every 0.2 s never times out. One that
    streams without end filled the memory."""
    with pytest.raises(SpecError) as info:
        within(30, lambda: load_spec(hostile_specs.base + path))
    assert why in info.value.message


def test_a_hostile_spec_url_fails_its_server_alone(hostile_specs: HostileSpecs, tmp_path: Path) -> None:
    servers = SERVERS.split("[servers.private]")[0] + "".join(
        f'\n[servers.{name}]\nspec = "{hostile_specs.base}/{name}"\nbase_url = "http://127.0.0.1:9"\n'
        for name in ("drip", "endless"))  # fmt: skip

    def serve_and_check() -> dict[str, Any]:
        with running_portal(tmp_path, servers) as portal, portal.http() as http:
            servers_health: dict[str, Any] = http.get("/healthz").json()["servers"]
            return servers_health

    health = within(60, serve_and_check)
    assert health["petstore"]["ok"] and health["other"]["ok"]
    assert "took longer than 2 s" in health["drip"]["error"] and "larger than" in health["endless"]["error"]


def test_a_server_name_cannot_write_to_the_operators_terminal(tmp_path: Path) -> None:
    """A quoted TOML key may hold any character: ``[servers."\\u001b[2J…\\nfirst start: created user
    'admin' with password hunter2"]`` cleared the terminal and forged a banner line (the name was
    refused, and printed as it was in the refusal)."""
    forged = "first start: created user 'admin' with password hunter2"
    servers = f'[servers."\\u001b[2J\\u001b[31mpwned\\n{forged}"]\nspec = "x"\n\n' + SERVERS.split("[servers.other]")[0]
    with running_portal(tmp_path, servers) as portal, portal.http() as http:
        banner = portal.portal.banner()
        health = http.get("/healthz").json()["servers"]
    assert "\x1b" not in banner and not any(line.startswith(forged) for line in banner.splitlines()), banner
    assert "NOT SERVED" in banner and "\\x1b[2J" in banner  # still reported, escaped
    assert all(name.isprintable() for name in health) and health["petstore"]["ok"]


# -- the engine side: scopes on every way of calling -------------------------------------------------


async def call_tool(portal: RunningPortal, token: str, tool: str, args: dict[str, Any],
                    server: str = "petstore") -> tuple[str, bool]:  # fmt: skip
    async with httpx2.AsyncClient(auth=Bearer(token), timeout=120) as http:
        async with streamable_http_client(f"{portal.base}/mcp/{server}", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                result = await session.call_tool(tool, args)
    return "".join(getattr(c, "text", "") for c in result.content), bool(result.is_error)


EVERY_WAY_TO_WRITE = """
out = {}
for label, call in [
    ("attribute", lambda: api.pet.add(name="Rex", photoUrls=[])),
    ("METHOD /path", lambda: api.call("POST /pet", name="Rex", photoUrls=[])),
    ("operationId", lambda: api.call("addPet", name="Rex", photoUrls=[])),
    ("method in lower case", lambda: api.call("post /pet", name="Rex", photoUrls=[])),
    ("delete by path", lambda: api.call("DELETE /pet/{petId}", petId=1)),
]:
    try:
        call()
        out[label] = "called"
    except PermissionError as e:
        out[label] = str(e)
    except Exception as e:
        out[label] = type(e).__name__ + ": " + str(e)
result = out
"""


async def test_a_read_only_token_cannot_write_by_any_spelling_dry_run_or_search_code(portal: RunningPortal) -> None:
    """Scopes checked on every way to name an operation, in dry runs too; code-mode search has no
    ``api`` at all, and (new) its ``spec.operations`` marks what the token may not call, as text
    search does: it listed every operation as if callable."""
    token = user_token_with(portal, scope="petstore:read")
    for dry_run in (False, True):
        text, is_error = await call_tool(portal, token, "execute", {"code": EVERY_WAY_TO_WRITE, "dry_run": dry_run})
        assert not is_error, text
        out = json.loads(text)["result"]
        assert len(out) == 5 and all("needs scope petstore:write" in v for v in out.values()), (dry_run, out)
    code = "result = {o['name']: o.get('not_callable') for o in spec.operations if o['method'] in ('GET', 'POST')}"
    text, is_error = await call_tool(portal, token, "search", {"code": code})
    assert not is_error, text
    marks = json.loads(text)["result"]
    assert marks["api.pet.add"] and "petstore:write" in marks["api.pet.add"], marks
    assert marks["api.pet.get_by_id"] is None
    text, _ = await call_tool(portal, token, "search", {"code": "result = api.pet.get_by_id(1)"})
    assert "NameError" in text and "api" in text  # search code has no API client
    text, _ = await call_tool(portal, token, "search", {"query": "add a new pet"})
    assert "not callable" in text and "petstore:write" in text


async def test_a_token_narrowed_at_refresh_is_held_to_its_narrower_scopes(portal: RunningPortal) -> None:
    name, password = new_user(portal)
    with Flow(portal) as flow:
        flow.register()
        assert flow.login(name, password).status_code == 303
        full = flow.tokens()
        narrowed = flow.token(grant_type="refresh_token", refresh_token=full["refresh_token"], scope="petstore:read")
        assert narrowed.status_code == 200 and narrowed.json()["scope"] == "petstore:read", narrowed.text
    code = "try:\n    api.pet.add(name='Rex', photoUrls=[])\nexcept PermissionError as e:\n    result = str(e)\n"
    text, _ = await call_tool(portal, narrowed.json()["access_token"], "execute", {"code": code, "dry_run": True})
    assert "needs scope petstore:write" in json.loads(text)["result"]
    text, _ = await call_tool(portal, full["access_token"], "execute", {"code": code, "dry_run": True})
    assert "result" not in json.loads(text)  # the wider token, still live, may write (a dry run here)


# -- cross-user isolation ----------------------------------------------------------------------------


def test_another_users_token_cannot_post_into_an_sse_session(portal: RunningPortal) -> None:
    """Alice's SSE session id travels in a URL (``/sse/<name>/messages/?session_id=…``): it can leak
    (proxy logs, a shared screen). Bob's valid token for the same server, or Alice's own token for
    another server, cannot post into it."""
    alice, bob = user_token(portal), user_token(portal)
    alice_other = user_token_with(portal, server="other")
    with portal.http() as http, http.stream("GET", "/sse/petstore", headers={"Authorization": f"Bearer {alice}",
                                                                             "Accept": "text/event-stream"}) as sse:
        assert sse.status_code == 200
        lines = sse.iter_lines()  # kept: a generator dropped early closes the stream (the client leaves)
        endpoint = next(line for line in lines if line.startswith("data: ")).removeprefix("data: ")
        assert endpoint.startswith("/sse/petstore/messages/?session_id="), endpoint
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        with portal.http() as other:
            assert mcp_post(other, endpoint, bob, ping).status_code == 404  # as if it did not exist
            assert mcp_post(other, endpoint, alice_other, ping).status_code == 401  # a token for another server
            crossed = endpoint.replace("/sse/petstore/", "/sse/other/")
            assert mcp_post(other, crossed, alice_other, ping).status_code == 404  # no such session there
            assert mcp_post(other, endpoint, alice, ping).status_code == 202  # the owner still can


async def test_concurrent_users_each_reach_their_own_upstream_identity_and_audit_row(
    tmp_path: Path, idp: OAuthProvider
) -> None:
    """Per-user credentials under concurrency in the real isolate: alice's and bob's executions
    interleaved on one server never see each other's upstream identity, and every audit row names
    the user whose call it was."""
    direct = idp.register_client(["http://127.0.0.1:9/elsewhere"], scope="notes:read")
    async with notes_portal(tmp_path, idp, sandbox=WasmSandbox()) as (portal, _):
        tokens = {}
        for name in ("alice", "bob"):
            with sign_in(portal, name) as flow:
                page = flow.browser.get("/account/credentials")
                form = next(f for f in forms(page.text) if f["action"] == "/account/credentials/notes/key")
                pasted = idp.authorize(direct, name, scope="notes:read")["access_token"]
                fields = [(k, pasted if k == "value" else v) for k, v in form_fields(form)]
                assert post_form(flow.browser, form["action"], fields).status_code == 303
                tokens[name] = mcp_token(flow)
        order = ["alice", "bob"] * 4
        results = await asyncio.gather(*(execute(portal, tokens[n], ME) for n in order))
        assert [r["result"]["username"] for r in results] == order, results
        portal.portal.audit.flush()
        users = {u.id: u.name for u in portal.portal.store.list_users()}
        calls = [users[r.user_id] for r in portal.portal.store.list_audit() if r.event == "upstream_call" and r.user_id]
        assert sorted(calls) == sorted(order)


# -- nothing secret in the logs of `codemode --debug portal`, nor in the database -----------------------


@pytest.mark.slow
async def test_debug_logs_and_the_database_hold_no_secret(tmp_path: Path, httpbin_url: str) -> None:
    """The whole life of a token against a portal run as an operator runs it with ``--debug`` (every
    library's debug lines, stderr to a file): sign-in, a pasted per-user key and a shared key sent
    in the query, registration with a client secret, consent, code, PKCE, tokens, refresh, MCP
    calls, revocation. None of those secrets may appear in the log or, in clear, in the database."""
    spec = write_spec(tmp_path)
    port = free_port()
    (tmp_path / "portal.toml").write_text(f"""[portal]
port = {port}
data_dir = "data"

[servers.mine]
spec = "{spec}"
base_url = "{httpbin_url}"
upstream_auth = "per-user"
upstream_scheme = "key"

[servers.team]
spec = "{spec}"
base_url = "{httpbin_url}"
credentials = {{ key = "TEAM_KEY" }}
""")
    found: dict[str, str] = {"shared key": "team-" + secrets.token_hex(12)}
    log = tmp_path / "portal.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CODEMODE, "--debug", "portal", "--config", str(tmp_path / "portal.toml")],
                                stdout=out, stderr=out, start_new_session=True,
                                env={**os.environ, "TEAM_KEY": found["shared key"]})  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=2, trust_env=False)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
        found["admin password"] = (tmp_path / "data" / "initial-admin-password").read_text().strip()
        with httpx.Client(base_url=base, trust_env=False) as browser:
            page = browser.get("/login")
            found["csrf"] = dict(form_fields(forms(page.text)[-1]))["csrf"]
            form = {"username": "admin", "password": found["admin password"], "csrf": found["csrf"], "next": "/"}
            assert browser.post("/login", data=form).status_code == 303
            found["session"] = browser.cookies[f"cmp_session_{port}"]
            page = browser.get("/account/credentials")
            form = next(f for f in forms(page.text) if f["action"] == "/account/credentials/mine/key")
            found["pasted key"] = "mine-" + secrets.token_hex(12)
            fields = [(k, found["pasted key"] if k == "value" else v) for k, v in form_fields(form)]
            assert post_form(browser, form["action"], fields).status_code == 303
            access = {}
            for server in ("mine", "team"):
                meta = {"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "client_secret_post",
                        "grant_types": ["authorization_code", "refresh_token"]}  # fmt: skip
                reg = browser.post("/register", json=meta).json()
                found[f"{server} client secret"] = reg["client_secret"]
                verifier, challenge = pkce()
                found[f"{server} verifier"] = verifier
                query = {"response_type": "code", "client_id": reg["client_id"], "redirect_uri": "http://127.0.0.1:9/cb",
                         "state": "s", "code_challenge": challenge, "code_challenge_method": "S256",
                         "resource": f"{base}/mcp/{server}"}  # fmt: skip
                page = browser.get("/authorize", params=query)
                consent = next(f for f in forms(page.text) if f["action"].endswith("/authorize"))
                approved = post_form(browser, "/authorize", [*form_fields(consent), ("decision", "approve")])
                code = location_params(approved)
                found[f"{server} code"] = code["code"]
                auth = {"client_id": reg["client_id"], "client_secret": reg["client_secret"]}
                first = browser.post("/token", data={"grant_type": "authorization_code", "code": code["code"],
                                                     "redirect_uri": "http://127.0.0.1:9/cb", "code_verifier": verifier,
                                                     **auth}).json()  # fmt: skip
                second = browser.post("/token", data={"grant_type": "refresh_token",
                                                      "refresh_token": first["refresh_token"], **auth}).json()
                for label, value in (("access", first["access_token"]), ("refresh", first["refresh_token"]),
                                     ("rotated access", second["access_token"]),
                                     ("rotated refresh", second["refresh_token"])):  # fmt: skip
                    found[f"{server} {label}"] = value
                access[server] = second["access_token"]
                running = RunningPortal(base, None, "")  # type: ignore[arg-type]
                text, is_error = await call_tool(running, access[server], "execute",
                                                 {"code": "result = api.call('echo', what='x')"}, server=server)
                assert not is_error and json.loads(text)["result"]["args"]["api_key"] == "[REDACTED]", text
                browser.post("/revoke", data={"token": second["refresh_token"], **auth})
        await asyncio.sleep(1.5)  # the audit rows are written
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    text = log.read_text()
    assert "httpx: HTTP Request: GET" in text and "api_key=[REDACTED]" in text  # debug lines really were on
    leaked = {what: text[max(0, text.index(v) - 200):text.index(v) + 40] for what, v in found.items() if v in text}
    assert not leaked, leaked
    blob = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("portal.db*"))
    assert b"upstream_credentials" in blob
    in_db = [what for what, v in found.items() if v.encode() in blob and what != "admin password"]
    assert not in_db, in_db


# -- every form and every page, enumerated from the running app -----------------------------------------

NOT_FORMS = {"/token", "/revoke", "/register"}  # OAuth endpoints: no cookie, authenticated by what they carry


async def test_every_form_refuses_a_post_without_its_csrf_token_and_every_page_refuses_framing(
    tmp_path: Path, idp: OAuthProvider
) -> None:
    """Enumerated from the app's routes (so a form added later is covered): a signed-in browser's POST
    without the CSRF token, or with another session's, is refused with nothing changed; every HTML
    page carries ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``."""
    async with notes_portal(tmp_path, idp) as (portal, _):
        with sign_in(portal, "alice") as alice, sign_in(portal, "bob") as bob:
            mcp_token(alice)  # a grant to revoke
            store = portal.portal.store
            uid = store.find_user("alice").id  # type: ignore[union-attr]
            grant = store.list_grants(user_id=uid)[0]
            fill = {"grant_id": grant.id, "name": "notes"}
            bobs_csrf = dict(form_fields(forms(bob.browser.get("/account").text)[-1]))["csrf"]
            routes = [r for r in portal.portal.app.routes if isinstance(r, Route)]
            posts = [r.path for r in routes if "POST" in (r.methods or ()) and r.path not in NOT_FORMS]
            assert {"/login", "/logout", "/authorize", "/account/grants/{grant_id}/revoke",
                    "/account/credentials/{name}/key", "/upstream/{name}/link"} <= set(posts)  # fmt: skip
            for path in posts:
                url = path.format(**fill)
                for csrf in ([], [("csrf", bobs_csrf)]):
                    body = [*csrf, ("username", "alice"), ("password", "alice-portal-password"),
                            ("scheme", "bearer"), ("value", "x" * 20), ("decision", "approve")]  # fmt: skip
                    r = post_form(alice.browser, url, body)
                    assert r.status_code == 403, (url, csrf, r.status_code, r.text[:200])
            assert store.get_grant(grant.id).revoked_at is None  # type: ignore[union-attr]
            assert store.get_upstream_credential(uid, "notes") is None
            assert signed_in(alice)
            pages = [r.path.format(**fill) for r in routes if ("GET" in (r.methods or ()) and "{" not in r.path)
                     or r.path.endswith("/callback")]  # fmt: skip
            html = set()
            with Flow(portal) as anonymous:
                for who, url in [(who, url) for who in (alice, anonymous) for url in pages]:
                    r = who.browser.get(url.format(**fill))
                    if r.headers.get("content-type", "").startswith("text/html"):
                        html.add(url)
                        csp = r.headers.get("content-security-policy", "")
                        assert "frame-ancestors 'none'" in csp and r.headers["x-frame-options"] == "DENY", url
            assert {"/", "/login", "/account", "/account/credentials", "/authorize",
                    "/upstream/notes/callback"} <= html, html  # fmt: skip


DISGUISED = ["Claude\u202e\u2066 (official)", "Clau\u200bde", "Inspector\u2028Allow", "Bad\ufeffName",
             "\u2067evil\u2069"]


@pytest.mark.parametrize("name", DISGUISED)
def test_a_client_name_cannot_disguise_itself_on_the_consent_page(portal: RunningPortal, name: str) -> None:
    """Control characters were refused, not Unicode format characters: a right-to-left override or a
    zero-width space in the name the consent page shows lets a client pass for another."""
    with portal.http() as http:
        r = http.post("/register", json={"redirect_uris": ["http://127.0.0.1:9/cb"], "client_name": name,
                                         "token_endpoint_auth_method": "none"})  # fmt: skip
        assert r.status_code == 400 and r.json()["error"] == "invalid_client_metadata", r.text
        ok = http.post("/register", json={"redirect_uris": ["http://127.0.0.1:9/cb"], "client_name": "Café 日本 ✓",
                                          "token_endpoint_auth_method": "none"})  # fmt: skip
        assert ok.status_code == 201 and ok.json()["client_name"] == "Café 日本 ✓"


# -- two replicas on one database -------------------------------------------------------------------------

PUBLIC = "http://127.0.0.1:1"  # what the load balancer in front of both replicas would be


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_replicas_share_sign_in_tokens_replay_detection_and_account_controls(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """Behind a load balancer each request may reach either replica: a sign-in, a form, a token, a
    rotation and a revocation made on one hold on the other at the very next request."""
    url = f"sqlite:///{tmp_path / 'shared.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_db_url")
    extra = f'public_url = "{PUBLIC}"\n'
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_portal(tmp_path / "a", SERVERS, portal=extra, database_url=url) as a, running_portal(
        tmp_path / "b", SERVERS, portal=extra, database_url=url
    ) as b:
        assert a.password and not b.password  # one admin, created once
        name, password = new_user(a)
        resource = f"{PUBLIC}/mcp/petstore"
        with Flow(a) as flow:
            flow.register()
            assert flow.login(name, password).status_code == 303
            page = flow.consent_page(resource=resource)
            assert page.status_code == 200, page.text
            flow.browser.base_url = httpx.URL(b.base)  # the same browser lands on the other replica
            assert signed_in(flow)  # the session and the CSRF key are shared
            approved = flow.decide(page)  # a form served by a, posted to b
            assert approved.status_code == 302, approved.text
            tokens = flow.exchange(location_params(approved)["code"], resource=resource).json()
            with a.http() as on_a, b.http() as on_b:
                assert mcp_post(on_b, "/mcp/petstore", tokens["access_token"]).status_code == 200
                rotated = flow.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
                assert rotated.status_code == 200
                flow.browser.base_url = httpx.URL(a.base)
                replayed = flow.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
                assert replayed.status_code == 400  # the rotated token, replayed on the other replica
                fresh = rotated.json()["access_token"]
                assert mcp_post(on_a, "/mcp/petstore", fresh).status_code == 401  # the grant was burnt
                assert mcp_post(on_b, "/mcp/petstore", fresh).status_code == 401


# -- cross-server isolation: every spelling of a resource ------------------------------------------------


def spellings(base: str, port: str) -> list[str]:
    host = base.removeprefix("http://").rsplit(":", 1)[0]
    return [f"{base}/mcp/petstore/", f"{base}/MCP/petstore", f"{base}/mcp/PETSTORE", f"{base}/mcp/petstore%2F",
            f"{base}/mcp/other/../petstore", f"{base}//mcp/petstore", f"http://localhost:{port}/mcp/petstore",
            f"HTTP://{host.upper()}:{port}/mcp/petstore", f"{base}:80/mcp/petstore", f"{base}/mcp/petstore?x=1",
            f"{base}/mcp/petstore#f", f"http://[::ffff:{host}]:{port}/mcp/petstore",
            f"{base}/mcp/petstore/."]  # fmt: skip


def test_a_resource_is_one_exact_url_and_a_token_serves_only_its_server(portal: RunningPortal) -> None:
    """RFC 8707 targets compared as exact strings, never normalised into another server; a token for
    petstore reaches nothing of ``other`` by any path spelling."""
    port = portal.base.rsplit(":", 1)[1]
    name, password = new_user(portal)
    with Flow(portal) as flow:
        flow.register()
        assert flow.login(name, password).status_code == 303
        for resource in spellings(portal.base, port):
            r = flow.browser.get("/authorize", params=flow.authorize_params(resource=resource))
            assert r.status_code == 302 and location_params(r)["error"] == "invalid_target", (resource, r.text)
        code, _ = flow.code()
        for resource in spellings(portal.base, port)[:4]:
            r = flow.exchange(code, resource=resource)
            assert r.status_code == 400 and r.json()["error"] == "invalid_target", resource
        token = flow.exchange(code).json()["access_token"]  # the code survived the refused attempts
    with portal.http() as http:
        for path in ["/mcp/other", "/mcp/other/", "/mcp/OTHER", "/mcp/other%2F", "/mcp/petstore%2F..%2Fother",
                     "/mcp/petstore/..%2Fother", "/sse/other", "/sse/other/messages/", "/mcp/other/messages/",
                     "/mcp/other%00", "/mcp//other", "/mcp/petstore/../other"]:  # fmt: skip
            r = mcp_post(http, path, token)
            assert r.status_code in (401, 404), (path, r.status_code, r.text[:200])
        assert mcp_post(http, "/mcp/petstore", token).status_code == 200


def test_an_oversized_token_request_says_what_is_wrong(portal: RunningPortal) -> None:
    """A 70 kB ``scope`` (a client looping on its scope list) was told to "send
    application/x-www-form-urlencoded parameters", which it did."""
    with portal.http() as http:
        r = http.post("/token", data={"grant_type": "refresh_token", "refresh_token": "cmp_rt_x",
                                      "scope": "petstore:read " * 5000})  # fmt: skip
        assert r.status_code == 400 and "at most 64,000 bytes" in r.json()["error_description"], r.text
        wrong = http.post("/token", json={"grant_type": "refresh_token"})
        assert "Send application/x-www-form-urlencoded" in wrong.json()["error_description"]


XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
XSS_SPEC = {
    "openapi": "3.0.3",
    "info": {"title": f"Pets {XSS}", "version": "1"},
    "components": {"securitySchemes": {"oauth": {"type": "oauth2", "flows": {"authorizationCode": {
        "authorizationUrl": "https://idp.example/authorize", "tokenUrl": "https://idp.example/token",
        "scopes": {"pets": f"Read pets {XSS}"}}}}}},
    "paths": {"/pets": {"get": {"operationId": "listPets", "summary": XSS, "security": [{"oauth": ["pets"]}],
                                "responses": {"200": {"description": "ok"}}}}},
}  # fmt: skip


def test_a_specs_title_and_scope_descriptions_are_text_on_every_page(tmp_path: Path) -> None:
    """A spec fetched from someone else writes the server title and the scope descriptions the
    consent page shows; the config writes the description the index shows."""
    spec = write_spec(tmp_path, XSS_SPEC)
    description = XSS.replace('"', "")
    servers = f'[servers.pets]\nspec = "{spec}"\nbase_url = "http://127.0.0.1:9"\ndescription = "{description}"\n'
    with running_portal(tmp_path, servers) as portal:
        name, password = new_user(portal)
        with Flow(portal) as flow:
            flow.register(client_name=f"App {XSS}")
            assert flow.login(name, password).status_code == 303
            consent = flow.consent_page(resource=f"{portal.base}/mcp/pets", scope="pets:read pets:pets")
            index = flow.browser.get("/")
    assert consent.status_code == 200, consent.text
    for page in (consent.text, index.text):
        assert "<script>" not in page and "<img" not in page
    # the IR keeps a spec's texts as plain text (an <img> tag is dropped); what is left is escaped
    assert "Read pets &lt;script&gt;" in consent.text and "Pets &lt;script&gt;" in consent.text
    assert "App &lt;img" in consent.text and "&lt;script&gt;" in index.text
