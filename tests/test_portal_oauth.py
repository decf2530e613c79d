"""The authorization server over real HTTP: metadata, registration, authorization with sign-in
and consent driven through the forms, PKCE S256 only, codes and refresh tokens single-use (a
replay revokes the grant), resource indicators, revocation, and errors per RFC 6749 §5.2."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from portal_harness import PETSTORE, REDIRECT, Flow, RunningPortal, forms, location_params, post_form, running_portal

SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"

[servers.other]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"
"""


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    extra = "registrations_per_ip_hour = 10000"
    with running_portal(tmp_path_factory.mktemp("portal"), SERVERS, portal=extra) as running:
        yield running


@pytest.fixture
def flow(portal: RunningPortal) -> Iterator[Flow]:
    f = Flow(portal)
    f.register()
    yield f
    f.browser.close()


def mcp_status(portal: RunningPortal, token: str, server: str = "petstore") -> httpx.Response:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    with portal.http() as http:
        return http.post(f"/mcp/{server}", json=init, headers={"Authorization": f"Bearer {token}",
                                                               "Accept": "application/json, text/event-stream"})


def assert_oauth_error(r: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    assert body["error"] == error, body
    assert set(body) <= {"error", "error_description", "error_uri"}
    assert "Traceback" not in r.text and "File " not in r.text
    return body


# -- metadata ---------------------------------------------------------------------------------
def test_authorization_server_metadata(portal: RunningPortal) -> None:
    with portal.http() as http:
        meta = http.get("/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == portal.base
    assert meta["authorization_endpoint"] == f"{portal.base}/authorize"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["client_id_metadata_document_supported"] is True
    assert meta["registration_endpoint"] == f"{portal.base}/register"
    assert meta["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {"none", "client_secret_basic", "client_secret_post"}
    assert {"petstore:read", "petstore:write", "other:read"} <= set(meta["scopes_supported"])


def test_metadata_is_valid_rfc8414_for_an_https_issuer(tmp_path: Path) -> None:
    from authlib.oauth2 import rfc8414, rfc9207
    from codemode_portal import load_portal_config
    from codemode_portal._app import build_portal
    from codemode_portal._oauth import as_metadata

    from codemode._sandbox import LocalSandbox

    path = tmp_path / "portal.toml"
    path.write_text(f'[portal]\npublic_url = "https://mcp.example.com"\ndata_dir = "d"\n{SERVERS}')
    built = build_portal(load_portal_config(path), sandbox=LocalSandbox(), env={})
    meta = rfc8414.AuthorizationServerMetadata(as_metadata(built.oauth))
    meta.validate(metadata_classes=[rfc9207.AuthorizationServerMetadata])
    assert meta["issuer"] == "https://mcp.example.com"
    built.store.close()


def test_protected_resource_metadata_and_challenges(portal: RunningPortal) -> None:
    with portal.http() as http:
        prm = http.get("/.well-known/oauth-protected-resource/mcp/petstore").json()
        sse = http.get("/.well-known/oauth-protected-resource/sse/petstore").json()
        root = http.get("/.well-known/oauth-protected-resource")
        r = http.post("/mcp/petstore", json={})
    assert prm["resource"] == f"{portal.base}/mcp/petstore"
    assert sse["resource"] == f"{portal.base}/sse/petstore"
    assert prm["authorization_servers"] == [portal.base]
    assert prm["scopes_supported"][:2] == ["petstore:read", "petstore:write"]
    assert root.status_code == 404  # two servers: the root form would be ambiguous
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{portal.base}/.well-known/oauth-protected-resource/mcp/petstore"' in challenge
    assert 'error=' not in challenge  # no token sent: no error code (RFC 6750 §3.1)


# -- registration -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("meta", "error"),
    [
        ({"redirect_uris": ["http://evil.example.com/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://app.example/cb#frag"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://user:pw@app.example/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        ({"redirect_uris": "https://app.example/cb"}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://app.example/cb"], "grant_types": ["client_credentials"]},
         "invalid_client_metadata"),
        ({"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt"},
         "invalid_client_metadata"),
        ({"redirect_uris": ["https://app.example/cb"], "client_name": "x" * 500}, "invalid_client_metadata"),
        ({"client_name": "no redirects"}, "invalid_redirect_uri"),
    ],
)
def test_registration_refuses_bad_metadata(portal: RunningPortal, meta: dict[str, Any], error: str) -> None:
    with portal.http() as http:
        assert_oauth_error(http.post("/register", json=meta), 400, error)


def test_registration_refuses_non_json(portal: RunningPortal) -> None:
    with portal.http() as http:
        assert_oauth_error(http.post("/register", content=b"{nope", headers={"content-type": "application/json"}),
                           400, "invalid_client_metadata")
        assert_oauth_error(http.post("/register", data={"redirect_uris": "x"}), 400, "invalid_client_metadata")
        assert_oauth_error(http.post("/register", json=["a"]), 400, "invalid_request")


def test_confidential_client_gets_a_secret_once(portal: RunningPortal) -> None:
    with Flow(portal) as flow:
        _confidential(flow, portal)


def _confidential(flow: Flow, portal: RunningPortal) -> None:
    data = flow.register(token_endpoint_auth_method="client_secret_basic")
    assert data["client_secret"].startswith("cmp_cs_")
    stored = portal.portal.store.find_client(data["client_id"])
    assert stored is not None and stored.secret_hash != data["client_secret"]
    code, _ = flow.code()
    no_auth = flow.exchange(code)  # no secret: refused
    assert_oauth_error(no_auth, 401, "invalid_client")
    code, _ = flow.code()
    ok = flow.browser.post("/token", auth=(flow.client_id, data["client_secret"]), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": flow.redirect_uri,
        "code_verifier": flow.verifier})
    assert ok.status_code == 200, ok.text


# -- the authorization code flow --------------------------------------------------------------
def test_code_flow_issues_bound_opaque_tokens(flow: Flow, portal: RunningPortal) -> None:
    code, q = flow.code()
    assert q["iss"] == portal.base and q["state"].startswith("st-")
    r = flow.exchange(code)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    assert body["access_token"].startswith("cmp_at_") and body["refresh_token"].startswith("cmp_rt_")
    assert body["scope"].split() == ["petstore:read", "petstore:write"]
    dump = json.dumps([t.__dict__ for t in portal.portal.store.list_tokens()])
    assert body["access_token"] not in dump and body["refresh_token"] not in dump and code not in dump
    assert mcp_status(portal, body["access_token"]).status_code == 200
    other = mcp_status(portal, body["access_token"], "other")  # audience: another server's endpoint
    assert other.status_code == 401 and 'error="invalid_token"' in other.headers["www-authenticate"]


def test_sign_in_is_required_and_comes_back_to_the_request(flow: Flow) -> None:
    r = flow.browser.get("/authorize", params=flow.authorize_params())
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=%2Fauthorize%3F")
    page = flow.browser.get(r.headers["location"])
    form = forms(page.text)[-1]
    fields = dict((i["name"], i.get("value", "")) for i in form["inputs"] if "name" in i)
    logged = flow.browser.post("/login", data={**fields, "username": "admin", "password": flow.portal.password})
    assert logged.status_code == 303 and logged.headers["location"].startswith("/authorize?")
    consent = flow.browser.get(logged.headers["location"])
    assert consent.status_code == 200 and "Allow access to" in consent.text


def test_consent_page_shows_client_server_scopes_and_headers(flow: Flow) -> None:
    page = flow.consent_page(scope="petstore:read petstore:write:pets")
    assert page.status_code == 200
    assert "Test Client" in page.text and flow.client_id in page.text and "127.0.0.1:9" in page.text
    assert "petstore:read" in page.text and "petstore:write:pets" in page.text
    assert "petstore:write</code>" not in page.text  # not requested, not offered
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "form-action 'self' http://127.0.0.1:9" in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"


def test_narrowed_consent_and_deny(flow: Flow, portal: RunningPortal) -> None:
    code, _ = flow.code(uncheck=("petstore:write",))
    assert flow.exchange(code).json()["scope"] == "petstore:read"
    page = flow.consent_page(state="deny-me")
    denied = flow.decide(page, approve=False)
    assert denied.status_code == 302
    q = location_params(denied)
    expected = {"error": "access_denied", "state": "deny-me", "iss": portal.base}
    assert {k: q[k] for k in ("error", "state", "iss")} == expected
    assert "code" not in q
    assert denied.headers["location"].startswith(REDIRECT + "?")


def test_consent_without_a_valid_csrf_token_is_refused(flow: Flow, portal: RunningPortal) -> None:
    page = flow.consent_page()
    before = len(portal.portal.store.list_grants(active_only=False))
    r = flow.decide(page, csrf="forged")
    assert r.status_code == 403 and "location" not in r.headers
    form = next(f for f in forms(page.text) if f["action"] == "/authorize")
    fields = [(i["name"], i.get("value", "")) for i in form["inputs"] if i.get("type") == "hidden"]
    with Flow(portal) as other:  # another browser replaying this browser's form (and token)
        r2 = post_form(other.browser, "/authorize", [*fields, ("decision", "approve")])
    assert r2.status_code == 403
    assert len(portal.portal.store.list_grants(active_only=False)) == before


def test_pkce_is_required_and_s256_only(flow: Flow, portal: RunningPortal) -> None:
    missing = flow.consent_page(code_challenge=None, code_challenge_method=None)
    assert missing.status_code == 302
    assert location_params(missing)["error"] == "invalid_request"
    assert location_params(missing)["iss"] == portal.base
    plain = flow.consent_page(code_challenge=flow.verifier, code_challenge_method="plain")
    assert location_params(plain)["error"] == "invalid_request"
    no_method = flow.consent_page(code_challenge_method=None)
    assert location_params(no_method)["error"] == "invalid_request"
    code, _ = flow.code()
    wrong = flow.token(grant_type="authorization_code", code=code, redirect_uri=flow.redirect_uri,
                       code_verifier="x" * 50)
    assert_oauth_error(wrong, 400, "invalid_grant")
    code, _ = flow.code()
    none = flow.token(grant_type="authorization_code", code=code, redirect_uri=flow.redirect_uri)
    assert_oauth_error(none, 400, "invalid_request")


def test_code_replay_revokes_the_grant(flow: Flow, portal: RunningPortal) -> None:
    code, _ = flow.code()
    first = flow.exchange(code)
    assert first.status_code == 200
    token = first.json()["access_token"]
    assert mcp_status(portal, token).status_code == 200
    assert_oauth_error(flow.exchange(code), 400, "invalid_grant")
    assert mcp_status(portal, token).status_code == 401
    refreshed = flow.token(grant_type="refresh_token", refresh_token=first.json()["refresh_token"])
    assert_oauth_error(refreshed, 400, "invalid_grant")


def test_refresh_rotates_narrows_and_replay_revokes(flow: Flow, portal: RunningPortal) -> None:
    first = flow.tokens()
    second = flow.token(grant_type="refresh_token", refresh_token=first["refresh_token"], scope="petstore:read")
    assert second.status_code == 200, second.text
    s = second.json()
    assert s["scope"] == "petstore:read" and s["refresh_token"] != first["refresh_token"]
    wider = flow.token(grant_type="refresh_token", refresh_token=s["refresh_token"], scope="petstore:read other:read")
    assert_oauth_error(wider, 400, "invalid_scope")
    third = flow.token(grant_type="refresh_token", refresh_token=s["refresh_token"])  # the full grant again
    assert third.status_code == 200 and third.json()["scope"] == "petstore:read petstore:write"
    assert mcp_status(portal, third.json()["access_token"]).status_code == 200
    replay = flow.token(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert_oauth_error(replay, 400, "invalid_grant")
    assert mcp_status(portal, third.json()["access_token"]).status_code == 401  # the whole grant is gone
    assert_oauth_error(flow.token(grant_type="refresh_token", refresh_token=third.json()["refresh_token"]),
                       400, "invalid_grant")
    events = [r.event for r in portal.portal.store.list_audit()] + [r.event for r in portal.portal.audit._pending]
    assert "replay" in events and "token_refreshed" in events


def test_resource_indicators(flow: Flow, portal: RunningPortal) -> None:
    unknown = flow.consent_page(resource="https://elsewhere.example/mcp/petstore")
    q = location_params(unknown)
    assert q["error"] == "invalid_target" and q["iss"] == portal.base
    two = flow.browser.get("/authorize", params=[*flow.authorize_params().items(),
                                                 ("resource", f"{portal.base}/mcp/other")])
    assert location_params(two)["error"] == "invalid_target"
    inferred = flow.tokens(resource=None, scope="other:read")
    assert inferred["scope"] == "other:read"
    assert mcp_status(portal, inferred["access_token"], "other").status_code == 200
    none = flow.consent_page(resource=None)
    assert location_params(none)["error"] == "invalid_target"
    foreign_scope = flow.consent_page(scope="petstore:read other:read")
    assert location_params(foreign_scope)["error"] == "invalid_scope"
    code, _ = flow.code()
    mismatch = flow.exchange(code, resource=f"{portal.base}/mcp/other")
    assert_oauth_error(mismatch, 400, "invalid_target")
    code, _ = flow.code()
    ok = flow.exchange(code, resource=f"{portal.base}/mcp/petstore")
    assert ok.status_code == 200
    r = flow.token(grant_type="refresh_token", refresh_token=ok.json()["refresh_token"],
                   resource=f"{portal.base}/mcp/other")
    assert_oauth_error(r, 400, "invalid_target")
    sse = flow.tokens(resource=f"{portal.base}/sse/petstore")  # the SSE alias is the same server
    assert mcp_status(portal, sse["access_token"]).status_code == 200


def test_untrusted_client_or_redirect_is_never_redirected_to(flow: Flow, portal: RunningPortal) -> None:
    bad_redirect = flow.consent_page(redirect_uri="https://evil.example/cb")
    assert bad_redirect.status_code == 400 and "location" not in bad_redirect.headers
    assert "cannot be used" in bad_redirect.text
    unknown_client = flow.consent_page(client_id="nobody")
    assert unknown_client.status_code == 400 and "location" not in unknown_client.headers
    with portal.http() as http:
        anon = http.get("/authorize", params={"client_id": "nobody", "redirect_uri": "https://evil.example/cb",
                                               "response_type": "code"})
    assert anon.status_code == 400 and "location" not in anon.headers
    token_type = flow.consent_page(response_type="token")
    assert location_params(token_type)["error"] == "unsupported_response_type"


def test_revocation(flow: Flow, portal: RunningPortal) -> None:
    a = flow.tokens()
    r = flow.token(token=a["access_token"], token_type_hint="access_token")  # wrong endpoint on purpose
    assert r.status_code == 400
    revoked = flow.browser.post("/revoke", data={"token": a["access_token"], "client_id": flow.client_id})
    assert revoked.status_code == 200
    assert mcp_status(portal, a["access_token"]).status_code == 401
    refreshed = flow.token(grant_type="refresh_token", refresh_token=a["refresh_token"])  # the grant lives on
    assert refreshed.status_code == 200
    gone = flow.browser.post("/revoke", data={"token": refreshed.json()["refresh_token"], "client_id": flow.client_id})
    assert gone.status_code == 200
    assert mcp_status(portal, refreshed.json()["access_token"]).status_code == 401  # refresh revocation = grant
    unknown = flow.browser.post("/revoke", data={"token": "cmp_rt_nothing", "client_id": flow.client_id})
    assert unknown.status_code == 200
    assert_oauth_error(flow.browser.post("/revoke", data={"client_id": flow.client_id}), 400, "invalid_request")


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        ({"grant_type": "password", "username": "admin", "password": "x"}, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
        ({"grant_type": "authorization_code"}, 400, "invalid_request"),
        ({"grant_type": "authorization_code", "code": "cmp_ac_nope", "code_verifier": "x" * 43}, 400, "invalid_grant"),
        ({"grant_type": "refresh_token"}, 400, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, 400, "invalid_grant"),
        ({}, 400, "unsupported_grant_type"),
    ],
)
def test_token_endpoint_errors(flow: Flow, data: dict[str, str], status: int, error: str) -> None:
    assert_oauth_error(flow.token(**data), status, error)


def test_token_endpoint_malformed_requests(flow: Flow, portal: RunningPortal) -> None:
    with portal.http() as http:
        assert_oauth_error(http.post("/token", json={"grant_type": "authorization_code"}), 400, "invalid_request")
        assert_oauth_error(http.post("/token", content=b"a" * 70_000,
                                     headers={"content-type": "application/x-www-form-urlencoded"}),
                           400, "invalid_request")
        dup = http.post("/token", content=b"grant_type=refresh_token&grant_type=authorization_code",
                        headers={"content-type": "application/x-www-form-urlencoded"})
        assert_oauth_error(dup, 400, "invalid_request")
        unknown = http.post("/token", data={"grant_type": "authorization_code", "client_id": "nobody", "code": "x"})
        assert_oauth_error(unknown, 400, "invalid_client")
        assert http.get("/token").status_code == 405


def test_expired_code_is_refused(flow: Flow, portal: RunningPortal) -> None:
    from codemode_portal._crypto import token_hash
    from codemode_portal._store import _schema as t
    from sqlalchemy import update

    code, _ = flow.code()
    with portal.portal.store._engine.begin() as c:  # type: ignore[attr-defined]
        c.execute(update(t.codes).where(t.codes.c.hash == token_hash(code)).values(expires_at=time.time() - 1))
    assert_oauth_error(flow.exchange(code), 400, "invalid_grant")


def test_registration_is_rate_limited_per_address(tmp_path: Path) -> None:
    with running_portal(tmp_path, SERVERS, portal="registrations_per_ip_hour = 2") as limited, limited.http() as http:
        body = {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
        assert [http.post("/register", json=body).status_code for _ in range(2)] == [201, 201]
        assert_oauth_error(http.post("/register", json=body), 429, "access_denied")
