"""Hostile clients and token holders over real HTTP: the cases a probe of the running portal found
(inputs authlib would quote into an error, malformed Basic credentials, non-RFC 3986 redirect
URIs: each was a 500 or an accepted bad value before), and cross-client and escalation attempts."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal._crypto import token_hash
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from portal_harness import PETSTORE, Flow, RunningPortal, form_fields, forms, location_params, post_form, running_portal

SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"

[servers.other]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"
"""
WEIRD = ['"', "\\", "é", "\x01", "<script>", "\r\nX-Injected: 1"]


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    with running_portal(tmp_path_factory.mktemp("portal"), SERVERS, portal="registrations_per_ip_hour = 10000") as p:
        yield p


@pytest.fixture
def flow(portal: RunningPortal) -> Iterator[Flow]:
    with Flow(portal) as f:
        f.register()
        f.login()
        yield f


def no_leak(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    assert "Traceback" not in r.text and "File \"" not in r.text


@pytest.mark.parametrize("key", ["redirect_uri", "response_type", "client_id", "scope", "code_challenge_method",
                                 "resource", "state", "code_challenge"])
@pytest.mark.parametrize("junk", WEIRD)
def test_authorize_never_fails_on_odd_characters(flow: Flow, key: str, junk: str) -> None:
    params = flow.authorize_params()
    params[key] = params.get(key, "") + junk
    r = flow.browser.get("/authorize", params=params)
    no_leak(r)
    if r.status_code == 302:  # only to the verified redirect URI, with an error or a code, never split headers
        assert r.headers["location"].startswith(flow.redirect_uri + "?")
        assert "\n" not in r.headers["location"] and "\r" not in r.headers["location"]


@pytest.mark.parametrize("junk", WEIRD)
@pytest.mark.parametrize("key", ["grant_type", "client_id", "redirect_uri", "code", "code_verifier", "scope",
                                 "resource", "refresh_token"])
def test_token_endpoint_never_fails_on_odd_characters(flow: Flow, key: str, junk: str) -> None:
    data = {"grant_type": "authorization_code", "client_id": flow.client_id, "code": "cmp_ac_x",
            "redirect_uri": flow.redirect_uri, "code_verifier": "v" * 43}
    data[key] = data.get(key, "") + junk
    r = flow.browser.post("/token", content=httpx.QueryParams(data).__str__(),
                          headers={"content-type": "application/x-www-form-urlencoded"})
    no_leak(r)
    assert r.json()["error"] in ("invalid_request", "invalid_client", "invalid_grant", "unsupported_grant_type")


@pytest.mark.parametrize("raw", [b"\xff\xfe:\xff", b"nocolon", b'"q":"\\', b"\x00:\x00"])
def test_malformed_basic_credentials_are_invalid_client(flow: Flow, raw: bytes) -> None:
    r = flow.browser.post("/token", data={"grant_type": "authorization_code", "code": "x"},
                          headers={"Authorization": "Basic " + base64.b64encode(raw).decode()})
    no_leak(r)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    bad64 = flow.browser.post("/revoke", data={"token": "x"}, headers={"Authorization": "Basic !!!"})
    assert bad64.status_code == 401 and bad64.json()["error"] == "invalid_client"


@pytest.mark.parametrize("uri", ['https://a"b/cb', "https://é.example/cb", "https://app.example/c b",
                                 "https://a_b.example/cb", "https://app.example/<x>", "https://[::1/cb",
                                 "https://app.example:99999/cb"])
def test_registration_refuses_redirect_uris_outside_rfc3986(portal: RunningPortal, uri: str) -> None:
    with portal.http() as http:
        r = http.post("/register", json={"redirect_uris": [uri], "token_endpoint_auth_method": "none"})
    no_leak(r)
    assert r.status_code == 400 and r.json()["error"] == "invalid_redirect_uri"


def test_client_name_is_escaped_on_the_consent_page(portal: RunningPortal) -> None:
    with Flow(portal) as f:
        f.register(client_name='<img src=x onerror="alert(1)">')
        page = f.consent_page()
    assert "<img src=x" not in page.text and "&lt;img src=x" in page.text


def test_a_code_cannot_be_redeemed_by_another_client(flow: Flow, portal: RunningPortal) -> None:
    code, _ = flow.code()
    with Flow(portal) as thief:
        thief.register()
        thief.verifier = flow.verifier
        r = thief.exchange(code)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert flow.exchange(code).status_code == 200  # the rightful client still can


def test_a_refresh_token_cannot_be_used_by_another_client(flow: Flow, portal: RunningPortal) -> None:
    tokens = flow.tokens()
    with Flow(portal) as thief:
        thief.register()
        r = thief.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert flow.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"]).status_code == 200


def test_a_stolen_rotated_refresh_token_burns_the_grant_whoever_presents_it(flow: Flow, portal: RunningPortal) -> None:
    first = flow.tokens()
    second = flow.token(grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
    with Flow(portal) as thief:
        thief.register()
        thief.token(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert flow.token(grant_type="refresh_token", refresh_token=second["refresh_token"]).status_code == 400


def test_consent_cannot_grant_more_than_was_asked(flow: Flow, portal: RunningPortal) -> None:
    page = flow.consent_page(scope="petstore:read")
    form = next(f for f in forms(page.text) if f["action"] == "/authorize")
    fields = [*form_fields(form), ("grant_scope", "petstore:write"), ("grant_scope", "other:write"),
              ("decision", "approve")]
    r = post_form(flow.browser, "/authorize", fields)
    code = location_params(r)["code"]
    assert flow.exchange(code).json()["scope"] == "petstore:read"


def test_metadata_does_not_follow_the_host_header(portal: RunningPortal) -> None:
    with portal.http() as http:
        meta = http.get("/.well-known/oauth-authorization-server", headers={"Host": "evil.example"}).json()
        prm = http.get("/.well-known/oauth-protected-resource/mcp/petstore",
                       headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"}).json()
    assert meta["issuer"] == portal.base and "evil" not in str(meta)
    assert prm["resource"] == f"{portal.base}/mcp/petstore" and "evil" not in str(prm)


class Bearer(httpx2.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx2.Request) -> Any:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


async def test_an_open_sse_stream_stops_working_once_the_grant_is_revoked(flow: Flow, portal: RunningPortal) -> None:
    token = flow.tokens()["access_token"]
    sessions: list[str] = []
    async with sse_client(f"{portal.base}/sse/petstore", auth=Bearer(token), on_session_created=sessions.append) as st:
        async with ClientSession(st[0], st[1]) as s:
            await s.initialize()
            ok = await s.call_tool("search", {"query": "find pets by status"})
            assert not ok.is_error
            view = portal.portal.store.find_token(token_hash(token))
            assert view is not None
            portal.portal.store.revoke_grant(view.token.grant_id, time.time())
            # the stream is still open, but every message on it is a new request, and is refused
            async with httpx2.AsyncClient(timeout=30) as http:
                r = await http.post(f"{portal.base}/sse/petstore/messages/", params={"session_id": sessions[0]},
                                    json={"jsonrpc": "2.0", "id": 99, "method": "tools/list"},
                                    headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
            with pytest.raises(Exception):  # noqa: B017 - the SDK's SSE client only logs the refused POST: a timeout
                await s.call_tool("search", {"query": "find pets by status"}, read_timeout_seconds=3)


def test_behind_a_tls_proxy_the_public_url_is_the_only_identity(tmp_path: Any) -> None:
    extra = 'public_url = "https://mcp.example.com"\nregistrations_per_ip_hour = 10000'
    with running_portal(tmp_path, SERVERS, portal=extra) as p, p.http() as http:
        meta = http.get("/.well-known/oauth-authorization-server").json()
        assert meta["issuer"] == "https://mcp.example.com"
        assert meta["token_endpoint"] == "https://mcp.example.com/token"
        prm = http.get("/.well-known/oauth-protected-resource/mcp/petstore").json()
        assert prm["resource"] == "https://mcp.example.com/mcp/petstore"
        r = http.post("/mcp/petstore", json={}, headers={"Host": "mcp.example.com"})
        assert r.status_code == 401  # the public host passes the DNS-rebinding check; the token check answers
        assert 'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp/petstore"' in \
            r.headers["www-authenticate"]
        login = http.get("/login")
        cookie = login.headers["set-cookie"]
        assert cookie.startswith("__Host-cmp_session=") and "Secure" in cookie
        with Flow(p) as f:
            f.register()
            r = f.browser.get("/authorize", params=f.authorize_params(resource=f"{p.base}/mcp/petstore"))
            assert location_params(r)["error"] == "invalid_target"  # the loopback URL is not a resource here
            assert location_params(r)["iss"] == "https://mcp.example.com"
