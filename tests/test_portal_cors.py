"""CORS for browser-based MCP clients (the MCP Inspector's web UI): the OAuth metadata, /register,
/token, /revoke and every /mcp/<name> answer preflights and expose what a client must read (the
401 challenge, the session id), with any origin and never with credentials. The pages stay
without CORS, and the token, audience and DNS-rebinding checks stay as they were.

Before: ``OPTIONS /mcp/<name>`` was a 401 (the token check ran on the preflight, which never
carries a token) and the others were 405, so a web client could not even discover the server."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from portal_harness import PETSTORE, Flow, RunningPortal, running_portal
from upstreams import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Page

SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"
"""
INSPECTOR = "http://localhost:6274"  # where the MCP Inspector's web UI runs
API_PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource/mcp/petstore",
             "/register", "/token", "/revoke", "/mcp/petstore", "/sse/petstore"]  # fmt: skip
PAGES = ["/", "/login", "/logout", "/authorize", "/account", "/account/grants/x/revoke", "/account/credentials",
         "/healthz"]  # fmt: skip
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "web", "version": "1"}}}  # fmt: skip
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    with running_portal(tmp_path_factory.mktemp("cors"), SERVERS, portal="registrations_per_ip_hour = 10000") as p:
        yield p


@pytest.fixture(scope="module")
def token(portal: RunningPortal) -> str:
    with Flow(portal) as flow:
        flow.register()
        flow.login()
        access: str = flow.tokens()["access_token"]
        return access


def preflight(portal: RunningPortal, path: str, method: str = "POST", **extra: str) -> Any:
    asked = "authorization, content-type, mcp-protocol-version"
    headers = {"Origin": INSPECTOR, "Access-Control-Request-Method": method,
               "Access-Control-Request-Headers": asked, **extra}  # fmt: skip
    with portal.http() as http:
        return http.options(path, headers=headers)


@pytest.mark.parametrize("path", API_PATHS)
def test_api_endpoints_answer_preflights_without_credentials(portal: RunningPortal, path: str) -> None:
    r = preflight(portal, path)
    assert r.status_code == 200, (path, r.status_code, r.text)
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = r.headers["access-control-allow-headers"].lower()
    assert all(h in allowed for h in ("authorization", "mcp-session-id", "mcp-protocol-version", "last-event-id"))
    assert "access-control-allow-credentials" not in r.headers
    assert "www-authenticate" not in r.headers  # a preflight is not a token check


def test_a_401_challenge_and_the_session_id_are_readable_cross_origin(portal: RunningPortal, token: str) -> None:
    with portal.http() as http:
        r = http.post("/mcp/petstore", json=INIT, headers={**MCP_HEADERS, "Origin": INSPECTOR})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "*"
        assert "WWW-Authenticate" in r.headers["access-control-expose-headers"]
        ok = http.post("/mcp/petstore", json=INIT,
                       headers={**MCP_HEADERS, "Origin": INSPECTOR, "Authorization": f"Bearer {token}"})  # fmt: skip
        assert ok.status_code == 200, ok.text
        assert ok.headers["mcp-session-id"] and "Mcp-Session-Id" in ok.headers["access-control-expose-headers"]
        assert "access-control-allow-credentials" not in ok.headers


@pytest.mark.parametrize("path", PAGES)
def test_pages_get_no_cors_headers(portal: RunningPortal, path: str) -> None:
    r = preflight(portal, path)
    assert "access-control-allow-origin" not in r.headers, path
    with portal.http() as http:
        got = http.get(path, headers={"Origin": INSPECTOR})
    assert "access-control-allow-origin" not in got.headers, path


def test_private_network_access_preflights_are_refused(portal: RunningPortal) -> None:
    """A public web site must not be let through to a portal on a private or loopback address."""
    r = preflight(portal, "/mcp/petstore", **{"Access-Control-Request-Private-Network": "true"})
    assert r.status_code == 400 and "access-control-allow-private-network" not in r.headers


def test_cors_does_not_weaken_the_token_audience_or_dns_rebinding_checks(portal: RunningPortal, token: str) -> None:
    port = portal.base.rsplit(":", 1)[1]
    with portal.http() as http:
        bearer = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
        # a rebinding page: its Host (and Origin) is the attacker's name, resolved to the portal's address
        rebound = http.post("/mcp/petstore", json=INIT, headers={**bearer, "Host": f"evil.example:{port}",
                                                                 "Origin": f"http://evil.example:{port}"})  # fmt: skip
        assert rebound.status_code in (403, 421), rebound.text
        foreign = http.post("/mcp/petstore", json=INIT, headers={**bearer, "Origin": "https://evil.example"})
        assert foreign.status_code == 403, foreign.text
        # the preflight carried nothing: without a token the request itself is still a 401
        assert http.post("/mcp/petstore", json=INIT, headers={**MCP_HEADERS, "Origin": INSPECTOR}).status_code == 401


class _Blank(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>web client</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web_client_origin() -> Iterator[str]:
    """Another origin (``localhost``, another port) serving a blank page: where the web client runs."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Blank)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


DISCOVER_REGISTER_CALL = """async ([base, token, init]) => {
  const out = {};
  const mcp = (headers) => fetch(base + "/mcp/petstore", {method: "POST", body: JSON.stringify(init),
      headers: {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", ...headers}});
  const challenge = await mcp({});
  out.status = challenge.status;
  out.challenge = challenge.headers.get("WWW-Authenticate");
  const prm = await (await fetch(base + "/.well-known/oauth-protected-resource/mcp/petstore")).json();
  const as = await fetch(prm.authorization_servers[0] + "/.well-known/oauth-authorization-server");
  out.as = (await as.json()).issuer;
  const reg = await fetch(base + "/register", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({redirect_uris: ["http://localhost:6274/oauth/callback"], token_endpoint_auth_method: "none",
                            client_name: "web"})});
  out.registered = reg.status;
  const ok = await mcp({"Authorization": "Bearer " + token});
  out.ok = ok.status;
  out.session = ok.headers.get("Mcp-Session-Id");
  try {
    await fetch(base + "/account", {credentials: "include"});
    out.account = "readable";
  } catch (e) {
    out.account = "blocked";
  }
  return out;
}"""


def test_a_web_client_on_another_origin_discovers_registers_and_calls(
    portal: RunningPortal, token: str, web_client_origin: str, page: Page
) -> None:
    """In Chromium, from a page on another origin: the whole discovery and a call, as the Inspector does;
    the signed-in pages stay unreadable from there."""
    page.goto(web_client_origin + "/")
    out = page.evaluate(DISCOVER_REGISTER_CALL, [portal.base, token, INIT])
    assert out["status"] == 401 and "resource_metadata=" in (out["challenge"] or ""), out
    assert out["as"] == portal.base and out["registered"] == 201, out
    assert out["ok"] == 200 and out["session"], out
    assert out["account"] == "blocked", out
