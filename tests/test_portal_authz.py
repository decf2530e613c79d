"""Black-box authorization suite, part 1: the OAuth flows and the resource servers over real HTTP.

Modelled on the MCP authorization spec (2026-07-28, incl. its security considerations) and on the
kinds of cases Cloudflare's workers-oauth-provider tests: audience confusion, code and refresh
replay (each revoking the whole grant, siblings included), PKCE, redirect URIs, resource
indicators, scope narrowing, expired/revoked/malformed tokens, tokens in URLs, challenges, RFC 9207
``iss`` on every authorization response, metadata, and a client token never reaching the upstream
(httpbin's ``/headers`` echo). Every OAuth error is checked against RFC 6749 §5.2.

The cases that depend on what the store does (replays, expiry, revocation, rotation races,
narrowing) run on SQLite and on a real PostgreSQL (``stored`` fixture).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from authz_kit import (
    ACCEPT,
    INIT,
    assert_error_page,
    assert_no_internals,
    assert_oauth_error,
    challenge,
    expire,
    mcp_post,
    new_flow,
    redirect_query,
)
from codemode_portal._crypto import token_hash
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from portal_harness import HTTPBIN_SPEC, PETSTORE, REDIRECT, Flow, RunningPortal, pkce, post_form, running_portal

SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"

[servers.other]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"
"""
SETTINGS = "registrations_per_ip_hour = 100000\n"


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    with running_portal(tmp_path_factory.mktemp("authz"), SERVERS, portal=SETTINGS) as running:
        yield running


@pytest.fixture(scope="module")
def pg_module_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database in the session's PostgreSQL cluster for this module."""
    with request.getfixturevalue("postgres").database("authz") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stored(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    """The portal on each storage backend (SQLite: the module's portal; PostgreSQL: its own)."""
    if request.param == "sqlite":
        yield request.getfixturevalue("portal")
        return
    url = request.getfixturevalue("pg_module_url")
    with running_portal(tmp_path_factory.mktemp("authz-pg"), SERVERS, portal=SETTINGS, database_url=url) as running:
        yield running


@pytest.fixture
def flow(portal: RunningPortal) -> Iterator[Flow]:
    with new_flow(portal) as f:
        yield f


@pytest.fixture
def sflow(stored: RunningPortal) -> Iterator[Flow]:
    with new_flow(stored) as f:
        yield f


def ok(portal: RunningPortal, token: str, path: str = "/mcp/petstore") -> bool:
    r = mcp_post(portal, path, token)
    if r.status_code == 200:
        return True
    assert r.status_code == 401 and challenge(r).get("error") == "invalid_token", (r.status_code, r.headers)
    return False


def refresh(flow: Flow, token: str, **extra: str) -> httpx.Response:
    return flow.token(grant_type="refresh_token", refresh_token=token, **extra)


# == audience ===================================================================================
def test_a_token_for_one_server_is_refused_by_every_endpoint_of_another(flow: Flow, portal: RunningPortal) -> None:
    tok = flow.tokens()["access_token"]
    assert ok(portal, tok, "/mcp/petstore")
    for path in ("/mcp/other", "/sse/other/messages/"):
        r = mcp_post(portal, path, tok)
        assert r.status_code == 401, path
        c = challenge(r)
        assert c["error"] == "invalid_token" and c["resource_metadata"].endswith(path.rstrip("/").removesuffix(
            "/messages")), c
    with portal.http() as http:
        with http.stream("GET", "/sse/other", headers={"Authorization": f"Bearer {tok}"}) as r:
            assert r.status_code == 401
        with http.stream("GET", "/sse/petstore", headers={"Authorization": f"Bearer {tok}"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")  # the alias


def test_a_token_for_the_sse_alias_works_on_its_server_only(flow: Flow, portal: RunningPortal) -> None:
    tok = flow.tokens(resource=f"{portal.base}/sse/petstore")["access_token"]
    assert ok(portal, tok, "/mcp/petstore")  # one server, two transports
    assert not ok(portal, tok, "/mcp/other")


# == code replay, client and redirect binding ===================================================
def test_code_replay_revokes_the_whole_grant_and_its_refreshed_siblings(sflow: Flow, stored: RunningPortal) -> None:
    code, _ = sflow.code()
    first = sflow.exchange(code).json()
    second = refresh(sflow, first["refresh_token"]).json()  # a sibling pair of the same grant
    other_grant = sflow.tokens()  # same user and client, another grant: untouched by the replay
    assert ok(stored, first["access_token"]) and ok(stored, second["access_token"])
    assert_oauth_error(sflow.exchange(code), 400, "invalid_grant")  # a replayed code revokes everything
    assert not ok(stored, first["access_token"]) and not ok(stored, second["access_token"])
    assert_oauth_error(refresh(sflow, second["refresh_token"]), 400, "invalid_grant")
    assert ok(stored, other_grant["access_token"])


def test_a_code_is_bound_to_its_client_and_redirect_uri(flow: Flow, portal: RunningPortal) -> None:
    code, _ = flow.code()
    with new_flow(portal) as thief:  # another registered client holding the code and even the verifier
        r = thief.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT, code_verifier=flow.verifier)
        assert_oauth_error(r, 400, "invalid_grant")
    other_redirect = flow.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT + "/x",
                                code_verifier=flow.verifier)  # fmt: skip
    assert_oauth_error(other_redirect, 400, "invalid_grant")
    assert flow.exchange(code).status_code == 200  # neither attempt burned the rightful client's code


def test_an_expired_code_is_refused(sflow: Flow, stored: RunningPortal) -> None:
    code, _ = sflow.code()
    expire(stored, "codes", hash=token_hash(code))
    assert_oauth_error(sflow.exchange(code), 400, "invalid_grant")


# == refresh tokens =============================================================================
def test_refresh_replay_revokes_the_whole_grant(sflow: Flow, stored: RunningPortal) -> None:
    t1 = sflow.tokens()
    t2 = refresh(sflow, t1["refresh_token"]).json()
    t3 = refresh(sflow, t2["refresh_token"]).json()
    unrelated = sflow.tokens()
    assert ok(stored, t3["access_token"])
    assert_oauth_error(refresh(sflow, t1["refresh_token"]), 400, "invalid_grant")  # a rotated token, again
    assert not ok(stored, t2["access_token"]) and not ok(stored, t3["access_token"])
    assert_oauth_error(refresh(sflow, t3["refresh_token"]), 400, "invalid_grant")
    assert ok(stored, unrelated["access_token"])
    assert refresh(sflow, unrelated["refresh_token"]).status_code == 200


def test_concurrent_refreshes_have_at_most_one_winner(sflow: Flow, stored: RunningPortal) -> None:
    rt = sflow.tokens()["refresh_token"]

    def attempt(_: int) -> httpx.Response:
        with stored.http() as http:
            return http.post("/token", data={"grant_type": "refresh_token", "refresh_token": rt,
                                             "client_id": sflow.client_id})  # fmt: skip

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(attempt, range(6)))
    assert all(r.status_code in (200, 400) for r in results), [r.status_code for r in results]
    winners = [r for r in results if r.status_code == 200]
    assert len(winners) <= 1
    for r in results:
        if r.status_code == 400:
            assert_oauth_error(r, 400, "invalid_grant")


def test_a_refresh_token_is_bound_to_its_client(flow: Flow, portal: RunningPortal) -> None:
    t = flow.tokens()
    with new_flow(portal) as thief:
        assert_oauth_error(refresh(thief, t["refresh_token"]), 400, "invalid_grant")
    assert refresh(flow, t["refresh_token"]).status_code == 200  # the theft attempt did not burn it


def test_scopes_only_ever_narrow_on_refresh(sflow: Flow, stored: RunningPortal) -> None:
    t = sflow.tokens()
    assert t["scope"] == "petstore:read petstore:write"
    narrowed = refresh(sflow, t["refresh_token"], scope="petstore:read").json()
    assert narrowed["scope"] == "petstore:read"
    for wider in ("petstore:read other:read", "petstore:admin", "other:write", "petstore:read petstore:write x:y"):
        assert_oauth_error(refresh(sflow, narrowed["refresh_token"], scope=wider), 400, "invalid_scope")
    # a refused refresh did not consume the token; the grant's own scopes remain the ceiling
    again = refresh(sflow, narrowed["refresh_token"]).json()
    assert again["scope"] == "petstore:read petstore:write"
    # a grant narrowed on the consent page can never be widened by a refresh
    code, _ = sflow.code(uncheck=("petstore:write",))
    consented = sflow.exchange(code).json()
    assert consented["scope"] == "petstore:read"
    assert_oauth_error(refresh(sflow, consented["refresh_token"], scope="petstore:read petstore:write"), 400,
                       "invalid_scope")  # fmt: skip
    assert refresh(sflow, consented["refresh_token"]).json()["scope"] == "petstore:read"


def test_an_expired_refresh_token_is_refused(sflow: Flow, stored: RunningPortal) -> None:
    t = sflow.tokens()
    expire(stored, "tokens", hash=token_hash(t["refresh_token"]))
    assert_oauth_error(refresh(sflow, t["refresh_token"]), 400, "invalid_grant")


# == PKCE =======================================================================================
@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "no challenge"),
        ({"code_challenge_method": None}, "no method (defaults to plain)"),
        ({"code_challenge_method": "plain"}, "plain"),
        ({"code_challenge_method": "s256"}, "method names are case-sensitive"),
        ({"code_challenge": "too-short"}, "a challenge must be 43-128 characters"),
        ({"code_challenge": "!" * 43}, "a challenge is base64url"),
    ],
)
def test_pkce_s256_is_required_at_authorize(flow: Flow, portal: RunningPortal, overrides: dict[str, Any],
                                            why: str) -> None:  # fmt: skip
    q = redirect_query(flow.consent_page(state="pkce", **overrides))
    assert q["error"] == "invalid_request", why
    assert q["state"] == "pkce" and q["iss"] == portal.base


def test_pkce_verifier_must_match_at_the_token_endpoint(flow: Flow) -> None:
    code, _ = flow.code()
    other_verifier, _ = pkce()
    base = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    assert_oauth_error(flow.token(**base), 400, "invalid_request")  # missing verifier
    assert_oauth_error(flow.token(**base, code_verifier=other_verifier), 400, "invalid_grant")
    assert_oauth_error(flow.token(**base, code_verifier=flow.challenge), 400, "invalid_grant")  # "plain" replay
    assert_oauth_error(flow.token(**base, code_verifier="short"), 400, "invalid_request")


# == redirect URIs ==============================================================================
@pytest.mark.parametrize(
    "uri",
    [
        "javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)", "file:///etc/passwd", " https://app.example/cb", "https://app.example/cb\n",
        "https://app.example/c\tb", "http://app.example/cb", "http://localhost.evil.example/cb",
        "http://127.0.0.1.nip.io/cb", "http://0.0.0.0:8080/cb", "https://app.example/cb#frag", "https://app.example/cb#",
        "https://user:pw@app.example/cb", "https://user@app.example/cb", "https://app.example:0/cb",
        "https://app.example:65536/cb", "https://app.example:-1/cb", "/relative/cb", "//app.example/cb",
        "com.example.app:/callback", "https:///cb", "https://ａｐｐ.example/cb",
    ],
)
def test_registration_refuses_unsafe_redirect_uris(portal: RunningPortal, uri: str) -> None:
    with portal.http() as http:
        r = http.post("/register", json={"redirect_uris": [uri], "token_endpoint_auth_method": "none"})
    assert_oauth_error(r, 400, "invalid_redirect_uri")


@pytest.mark.parametrize(
    "uri",
    [
        "https://evil.example/callback",  # another host
        REDIRECT + "/",  # trailing slash
        REDIRECT.replace("callback", "Callback"),  # case
        REDIRECT + "?next=https://evil.example",  # an added query (open redirect through the client)
        REDIRECT + "/../evil",  # path tricks
        REDIRECT.replace("127.0.0.1:9", "127.0.0.1:10"),  # another loopback port
        REDIRECT.replace("127.0.0.1:9", "localhost:9"),  # another loopback name
        REDIRECT.replace("http://", "http://evil.example@"),  # user info
        REDIRECT.replace("http://127.0.0.1:9", "http://127.0.0.1:9@evil.example"),
        "javascript:alert(document.cookie)",
    ],
)
def test_an_unregistered_redirect_uri_gets_a_page_never_a_redirect(flow: Flow, uri: str) -> None:
    assert_error_page(flow.consent_page(redirect_uri=uri), 400, says="cannot be used")
    # even together with another error that would otherwise be redirected
    assert_error_page(flow.consent_page(redirect_uri=uri, code_challenge=None), 400)


def test_unknown_clients_get_a_page_never_a_redirect(flow: Flow) -> None:
    assert_error_page(flow.consent_page(client_id="cmp_client_nobody"), 400)
    assert_error_page(flow.consent_page(client_id=""), 400)
    assert_error_page(flow.consent_page(client_id=None), 400)


# == resource indicators and scopes at /authorize ===============================================
@pytest.mark.parametrize(
    ("resource", "scope", "error"),
    [
        (None, None, "invalid_target"),  # nothing names a server
        (None, "petstore:read other:read", "invalid_target"),  # two servers named
        ("{base}/mcp/nope", None, "invalid_target"),
        ("{base}/mcp/petstore/", None, "invalid_target"),
        ("{base}/mcp/petstore#x", None, "invalid_target"),
        ("{base}/mcp/petstore?x=1", None, "invalid_target"),
        ("{base}/MCP/petstore", None, "invalid_target"),
        ("http://localhost:{port}/mcp/petstore", None, "invalid_target"),  # not the issuer's URL
        ("https://evil.example/mcp/petstore", None, "invalid_target"),
        ("javascript:alert(1)", None, "invalid_target"),
        ("{base}/mcp/petstore", "other:read", "invalid_scope"),  # a scope of another server
        ("{base}/mcp/petstore", "petstore:admin", "invalid_scope"),
        ("{base}/mcp/petstore", "openid", "invalid_scope"),
    ],
)
def test_authorize_refuses_bad_targets_with_a_redirect(flow: Flow, portal: RunningPortal, resource: str | None,
                                                       scope: str | None, error: str) -> None:  # fmt: skip
    port = portal.base.rsplit(":", 1)[1]
    res = resource.format(base=portal.base, port=port) if resource else None
    q = redirect_query(flow.consent_page(resource=res, scope=scope, state="t"))
    assert q["error"] == error and q["iss"] == portal.base and q["state"] == "t"


def test_authorize_refuses_two_resources(flow: Flow, portal: RunningPortal) -> None:
    flow.login()
    params = [*flow.authorize_params().items(), ("resource", f"{portal.base}/mcp/other")]
    assert redirect_query(flow.browser.get("/authorize", params=params))["error"] == "invalid_target"


def test_a_missing_resource_is_inferred_from_scopes_naming_one_server(flow: Flow, portal: RunningPortal) -> None:
    t = flow.tokens(resource=None, scope="other:read")
    assert t["scope"] == "other:read"
    assert ok(portal, t["access_token"], "/mcp/other") and not ok(portal, t["access_token"], "/mcp/petstore")


def test_token_endpoint_resource_must_match_the_grant(flow: Flow, portal: RunningPortal) -> None:
    code, _ = flow.code()
    for bad in (f"{portal.base}/mcp/other", "https://evil.example/mcp/petstore", f"{portal.base}/mcp/petstore/"):
        assert_oauth_error(flow.exchange(code, resource=bad), 400, "invalid_target")
    dup = post_form(flow.browser, "/token", [
        ("grant_type", "authorization_code"), ("code", code), ("redirect_uri", REDIRECT),
        ("code_verifier", flow.verifier), ("client_id", flow.client_id),
        ("resource", f"{portal.base}/mcp/petstore"), ("resource", f"{portal.base}/mcp/other")])  # fmt: skip
    assert_oauth_error(dup, 400, "invalid_target")
    t = flow.exchange(code).json()  # refused requests did not consume the code; a missing resource = the grant's
    assert_oauth_error(refresh(flow, t["refresh_token"], resource=f"{portal.base}/mcp/other"), 400, "invalid_target")
    assert refresh(flow, t["refresh_token"], resource=f"{portal.base}/mcp/petstore").status_code == 200


# == tokens at the resource server ==============================================================
def test_an_expired_access_token_is_refused(sflow: Flow, stored: RunningPortal) -> None:
    t = sflow.tokens()
    assert ok(stored, t["access_token"])
    expire(stored, "tokens", hash=token_hash(t["access_token"]))
    r = mcp_post(stored, "/mcp/petstore", t["access_token"])
    assert r.status_code == 401 and challenge(r)["error"] == "invalid_token"
    assert refresh(sflow, t["refresh_token"]).status_code == 200  # the grant lives on


def test_revocation_is_immediate_and_bound_to_the_client(sflow: Flow, stored: RunningPortal) -> None:
    t = sflow.tokens()
    with new_flow(stored) as stranger:  # RFC 7009 §2.1: a client may only revoke its own tokens
        r = stranger.browser.post("/revoke", data={"token": t["access_token"], "client_id": stranger.client_id})
        assert r.status_code in (200, 400)
    assert ok(stored, t["access_token"])
    r = sflow.browser.post("/revoke", data={"token": t["access_token"], "client_id": sflow.client_id,
                                            "token_type_hint": "access_token"})  # fmt: skip
    assert r.status_code == 200
    assert not ok(stored, t["access_token"])
    r = sflow.browser.post("/revoke", data={"token": t["refresh_token"], "client_id": sflow.client_id,
                                            "token_type_hint": "access_token"})  # a wrong hint still works
    assert r.status_code == 200
    assert_oauth_error(refresh(sflow, t["refresh_token"]), 400, "invalid_grant")


@pytest.mark.parametrize(
    ("header", "status", "error"),
    [
        ("Bearer", 401, "invalid_request"),
        ("Basic YWRtaW46YWRtaW4=", 401, "invalid_request"),
        ("Token cmp_at_x", 401, "invalid_request"),
        ("Bearer cmp_at_doesnotexist", 401, "invalid_token"),
        ("Bearer cmp_at_" + "A" * 8000, 401, "invalid_token"),
        ("Bearer {refresh}", 401, "invalid_token"),  # a refresh token is not an access token
        ("Bearer {access}x", 401, "invalid_token"),
        ("Bearer {access} {access}", 401, "invalid_token"),
        ("Bearer\t{access}", 401, "invalid_request"),
        ("Bearer cmp_at_\u00e9\u00e8", 401, "invalid_token"),
    ],
)
def test_malformed_bearer_headers_are_refused(flow: Flow, portal: RunningPortal, header: str, status: int,
                                              error: str) -> None:  # fmt: skip
    t = flow.tokens()
    value = header.format(access=t["access_token"], refresh=t["refresh_token"])
    with portal.http() as http:
        r = http.post("/mcp/petstore", json={}, headers={**ACCEPT, "Authorization": value.encode("latin-1")})  # type: ignore[dict-item]
    assert r.status_code == status, (value[:40], r.status_code, r.text[:200])
    c = challenge(r)
    assert c["scheme"] == "Bearer" and c.get("error") == error and "resource_metadata" in c
    assert r.json()["error"] == error


def test_the_bearer_scheme_is_case_insensitive(flow: Flow, portal: RunningPortal) -> None:
    tok = flow.tokens()["access_token"]
    assert mcp_post(portal, "/mcp/petstore", headers={"Authorization": f"bEaReR {tok}"}).status_code == 200


def test_two_authorization_headers_are_refused(flow: Flow, portal: RunningPortal) -> None:
    tok = flow.tokens()["access_token"]
    with portal.http() as http:
        r = http.post("/mcp/petstore", json={}, headers=[("Accept", ACCEPT["Accept"]),
                      ("Authorization", f"Bearer {tok}"), ("Authorization", "Bearer cmp_at_other")])  # fmt: skip
    assert r.status_code == 401 and challenge(r)["error"] == "invalid_request"


@pytest.mark.parametrize("path", ["/mcp/petstore", "/sse/petstore/messages/"])
def test_tokens_in_the_query_string_are_refused(flow: Flow, portal: RunningPortal, path: str) -> None:
    tok = flow.tokens()["access_token"]
    for headers in ({}, {"Authorization": f"Bearer {tok}"}):  # even with a good header as well
        r = mcp_post(portal, path, params={"access_token": tok}, headers=headers)
        assert r.status_code == 400 and challenge(r)["error"] == "invalid_request"
        assert tok not in r.text


@pytest.mark.parametrize("transport", ["mcp", "sse"])
def test_401_challenge_points_at_the_endpoints_own_metadata(portal: RunningPortal, transport: str) -> None:
    with portal.http() as http:
        r = http.post(f"/{transport}/petstore", json={}, headers=ACCEPT)
        if transport == "sse":
            r = http.get("/sse/petstore")
        assert r.status_code == 401
        c = challenge(r)
        assert c["scheme"] == "Bearer" and "error" not in c  # RFC 6750 §3.1: no error code without a token
        assert c["resource_metadata"] == f"{portal.base}/.well-known/oauth-protected-resource/{transport}/petstore"
        assert c["scope"].split() == ["petstore:read", "petstore:write"]  # what an MCP client then asks for
        prm = http.get(c["resource_metadata"])
    assert prm.status_code == 200
    doc = prm.json()
    assert doc["resource"] == f"{portal.base}/{transport}/petstore"  # RFC 9728 §3.3: exactly the URL in use
    assert doc["authorization_servers"] == [portal.base]
    assert doc["scopes_supported"][:2] == ["petstore:read", "petstore:write"]
    assert all(s.startswith("petstore:") for s in doc["scopes_supported"])


def test_403_insufficient_scope_names_the_scope_for_step_up(flow: Flow, portal: RunningPortal) -> None:
    t = flow.tokens()
    write_only = refresh(flow, t["refresh_token"], scope="petstore:write").json()  # narrowing may drop read
    r = mcp_post(portal, "/mcp/petstore", write_only["access_token"])
    assert r.status_code == 403
    c = challenge(r)
    assert c["error"] == "insufficient_scope" and c["scope"] == "petstore:read"
    assert c["resource_metadata"].endswith("/.well-known/oauth-protected-resource/mcp/petstore")


# == RFC 9207: iss on every authorization response ==============================================
def test_every_authorization_response_carries_iss_and_state(flow: Flow, portal: RunningPortal) -> None:
    responses = {
        "success": flow.decide(flow.consent_page(state="s1")),
        "access_denied": flow.decide(flow.consent_page(state="s2"), approve=False),
        "invalid_request": flow.consent_page(state="s3", code_challenge=None),
        "invalid_scope": flow.consent_page(state="s4", scope="nonsense"),
        "invalid_target": flow.consent_page(state="s5", resource=f"{portal.base}/mcp/nope"),
        "unsupported_response_type": flow.consent_page(state="s6", response_type="token"),
    }
    for i, (kind, r) in enumerate(responses.items(), 1):
        q = redirect_query(r)
        assert q["iss"] == portal.base and q["state"] == f"s{i}", kind
        assert ("code" in q) if kind == "success" else (q["error"] == kind), (kind, q)


# == metadata ===================================================================================
def test_metadata_issuer_is_the_discovery_base(portal: RunningPortal) -> None:
    with portal.http() as http:
        r = http.get("/.well-known/oauth-authorization-server")
        assert http.get("/.well-known/openid-configuration").status_code == 404  # not an OpenID provider
    meta = r.json()
    assert meta["issuer"] == portal.base and "no-store" not in r.headers.get("cache-control", "")
    for key in ("authorization_endpoint", "token_endpoint", "revocation_endpoint", "registration_endpoint"):
        assert meta[key].startswith(portal.base + "/"), key
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["response_types_supported"] == ["code"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert "implicit" not in meta["grant_types_supported"] and "password" not in meta["grant_types_supported"]


class PathProxy:
    """A reverse proxy that serves the portal under ``/portal`` (stripping it, as docs/portal.md asks
    of a TLS-terminating proxy) and passes ``/.well-known/…`` through unchanged; Host stays the
    proxy's own (the public host)."""

    def __init__(self, prefix: str = "/portal") -> None:
        self.upstream = ""
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                path = self.path
                if path.startswith(prefix + "/") or path == prefix:
                    path = path[len(prefix):] or "/"
                elif not path.startswith("/.well-known/"):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                skip = ("content-length", "connection", "transfer-encoding", "accept-encoding")
                headers = [(k, v) for k, v in self.headers.items() if k.lower() not in skip]
                with httpx.Client(base_url=proxy.upstream, timeout=60, trust_env=False) as http:
                    r = http.request(self.command, path, content=body, headers=headers)
                self.send_response(r.status_code)
                for k, v in r.headers.multi_items():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.public = self.base + prefix
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_public_url_behind_a_path_fixes_the_issuer_and_every_url(tmp_path: Path) -> None:
    from portal_harness import form_fields, forms

    proxy = PathProxy()
    public = proxy.public
    with ExitStack() as stack:
        stack.callback(proxy.close)
        running = stack.enter_context(running_portal(tmp_path, SERVERS, portal=f'{SETTINGS}public_url = "{public}"\n'))
        proxy.upstream = running.base
        web = stack.enter_context(httpx.Client(base_url=proxy.base, timeout=60, trust_env=False))
        meta = web.get("/.well-known/oauth-authorization-server/portal").json()  # RFC 8414 §3.1
        assert meta["issuer"] == public
        assert meta["authorization_endpoint"] == f"{public}/authorize"
        assert meta["token_endpoint"] == f"{public}/token"
        r = web.post("/portal/mcp/petstore", json={}, headers=ACCEPT)
        assert r.status_code == 401
        prm_url = challenge(r)["resource_metadata"]
        assert prm_url == f"{proxy.base}/.well-known/oauth-protected-resource/portal/mcp/petstore"
        prm = web.get(prm_url).json()
        assert prm["resource"] == f"{public}/mcp/petstore" and prm["authorization_servers"] == [public]
        # the whole flow as a browser and a client see it, through the public URL only
        reg = web.post("/portal/register", json={"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
                                                  "grant_types": ["authorization_code", "refresh_token"]})
        assert reg.status_code == 201, reg.text
        client_id = reg.json()["client_id"]
        verifier, challenge_ = pkce()
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "state": "p",
                  "code_challenge": challenge_, "code_challenge_method": "S256",
                  "resource": f"{public}/mcp/petstore"}
        r = web.get("/portal/authorize", params=params)
        assert r.status_code == 303
        login = r.headers["location"]
        assert login.startswith("/portal/login?"), login  # the pages stay under the public path
        page = web.get(login)
        assert page.status_code == 200 and 'action="/portal/login"' in page.text
        assert 'href="/portal/static/portal.css"' in page.text
        assert web.get("/portal/static/portal.css").status_code == 200
        fields = dict(form_fields(forms(page.text)[-1]))
        fields.update(username="admin", password=running.password)
        signed = web.post("/portal/login", data=fields)
        assert signed.status_code == 303 and signed.headers["location"].startswith("/portal/authorize?")
        consent = web.get(signed.headers["location"])
        assert consent.status_code == 200, consent.text
        form = next(x for x in forms(consent.text) if x["action"] == "/portal/authorize")
        q = redirect_query(post_form(web, "/portal/authorize", [*form_fields(form), ("decision", "approve")]))
        assert q["iss"] == public and q["state"] == "p"
        tok = web.post("/portal/token", data={
            "grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": client_id}).json()  # fmt: skip
        assert tok["scope"] == "petstore:read petstore:write"
        good = web.post("/portal/mcp/petstore", json=INIT,
                        headers={**ACCEPT, "Authorization": f"Bearer {tok['access_token']}"})
        assert good.status_code == 200, good.text
        account = web.get("/portal/account")
        assert account.status_code == 200 and 'href="/portal/account"' in account.text


# == a client's token never reaches the upstream ================================================
class Bearer(httpx2.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, Any, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


async def test_the_client_token_never_reaches_the_upstream(tmp_path: Path, httpbin_url: str) -> None:
    servers = f"""
[servers.echo]
spec = "{HTTPBIN_SPEC}"
base_url = "{httpbin_url}"
headers = {{ X-Upstream-Key = "${{ECHO_KEY}}" }}
"""
    key = "upstream-" + secrets.token_hex(8)
    with running_portal(tmp_path, servers, env={"ECHO_KEY": key}) as portal, Flow(portal) as flow:
        flow.register()
        resource = f"{portal.base}/mcp/echo"
        t = flow.tokens(resource=resource)
        code = (
            "h = api.request_inspection.list_headers()['headers']\n"
            "a = api.anything.list()\n"
            "result = {'headers': {k.lower(): v for k, v in h.items()}, 'anything': a}\n"
        )
        async with httpx2.AsyncClient(auth=Bearer(t["access_token"]), timeout=120) as http:
            async with streamable_http_client(resource, http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as s:
                    await s.initialize()
                    ran = await s.call_tool("execute", {"code": code})
        text = "".join(c.text for c in ran.content if hasattr(c, "text"))
        assert not ran.is_error, text
        echoed = json.loads(text)["result"]
        assert "authorization" not in echoed["headers"], echoed["headers"]
        assert "x-upstream-key" in echoed["headers"]  # the portal's own credential was sent (shown redacted)
        secret_part = t["access_token"].removeprefix("cmp_at_")
        assert secret_part not in text and secret_part[:20] not in text
        assert base64.b64encode(t["access_token"].encode()).decode()[:20] not in text


# == the database going away and coming back ==================================================
def test_a_postgresql_restart_or_outage_is_answered_cleanly(tmp_path: Path) -> None:
    """Pooled connections die with the server: after a restart the next token check must still
    answer correctly (a read is retried once on a fresh connection), never 401 a valid token or
    fail with a 500. While the database is down: 503 with Retry-After, JSON for clients, a page for
    people, no stack trace; once it is back, everything works again."""
    pytest.importorskip("psycopg", reason="psycopg 3 not installed: run scripts/setup-postgres.sh")
    from postgres import SERVER_SETTINGS, _run, pg_bin, postgres_cluster

    def pg_ctl(*args: str) -> None:
        _run([str(pg_bin() / "pg_ctl"), "-D", str(cluster.directory / "data"), "-l",
              str(cluster.directory / "server.log"), "-w", *args], f"pg_ctl {args[-1]}")  # fmt: skip

    with postgres_cluster() as cluster, running_portal(tmp_path, SERVERS, portal=SETTINGS,
                                                       database_url=cluster.url) as running:  # fmt: skip
        with new_flow(running) as f:
            t = f.tokens()
            for _ in range(3):  # fill the pool
                assert ok(running, t["access_token"])
            pg_ctl("-m", "fast", "restart")
            for _ in range(6):  # every pooled connection is dead now; none of these may fail
                assert ok(running, t["access_token"])
            assert not ok(running, t["refresh_token"])
            pg_ctl("-m", "fast", "stop")
            down = {
                "mcp": mcp_post(running, "/mcp/petstore", t["access_token"]),
                "token": refresh(f, t["refresh_token"]),
                "register": f.browser.post("/register", json={"redirect_uris": [REDIRECT]}),
            }
            for what, r in down.items():
                assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, (what, r.status_code, r.text)
                assert r.json()["error"] == "temporarily_unavailable", what
                assert_no_internals(r.text)
            page = f.browser.get("/authorize", params=f.authorize_params())
            assert_error_page(page, 503, says="cannot reach its database")
            options = " ".join((f"-k {cluster.directory} -h 127.0.0.1 -p {cluster.port}", *SERVER_SETTINGS))
            pg_ctl("-o", options, "start")
            assert ok(running, t["access_token"])
            assert refresh(f, t["refresh_token"]).status_code == 200
