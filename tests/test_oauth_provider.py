"""Self-test of the test OAuth 2.0 + OpenID Connect provider (tests/idp.py, tests/oauth_provider/)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from idp import OAuthClient, OAuthProvider, oauth_provider, pkce_pair
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

if TYPE_CHECKING:
    from playwright.sync_api import Page

CALLBACK = "http://127.0.0.1:9/callback"  # never contacted: the helper stops at the redirect


@pytest.fixture(scope="module")
def provider() -> Iterator[OAuthProvider]:
    with oauth_provider(users=("alice", "bob")) as running:
        yield running


@pytest.fixture(scope="module")
def client(provider: OAuthProvider) -> OAuthClient:
    return provider.register_client([CALLBACK, "http://127.0.0.1:9/other"])


def _get(provider: OAuthProvider, path: str, token: str) -> httpx.Response:
    return httpx.get(f"{provider.base_url}{path}", headers={"Authorization": f"Bearer {token}"}, trust_env=False)


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_code_flow_with_pkce_gives_each_user_their_own_identity(
    provider: OAuthProvider, client: OAuthClient, user: str
) -> None:
    tokens = provider.authorize(client, user)
    assert tokens["token_type"] == "Bearer"
    me = _get(provider, "/api/me", tokens["access_token"])
    assert me.status_code == 200
    assert me.json()["username"] == user
    assert me.json()["sub"] == f"user-{user}"
    assert me.json()["client_id"] == client.client_id


def test_notes_are_per_user(provider: OAuthProvider, client: OAuthClient) -> None:
    alice = provider.authorize(client, "alice")["access_token"]
    bob = provider.authorize(client, "bob")["access_token"]
    made = httpx.post(f"{provider.base_url}/api/notes", json={"text": "alice's"}, trust_env=False,
                      headers={"Authorization": f"Bearer {alice}"})  # fmt: skip
    assert made.status_code == 201
    note = made.json()
    assert note["owner"] == "alice"
    assert note in _get(provider, "/api/notes", alice).json()
    assert note not in _get(provider, "/api/notes", bob).json()
    assert _get(provider, f"/api/notes/{note['id']}", bob).status_code == 404
    assert _get(provider, f"/api/notes/{note['id']}", alice).json() == note


def test_refresh_rotates_and_the_old_refresh_token_is_refused(provider: OAuthProvider, client: OAuthClient) -> None:
    first = provider.authorize(client, "alice")
    renewed = provider.refresh(client, first["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    second = renewed.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert _get(provider, "/api/me", second["access_token"]).json()["username"] == "alice"
    replay = provider.refresh(client, first["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"


def test_refresh_may_narrow_the_scope_but_not_widen_it(provider: OAuthProvider, client: OAuthClient) -> None:
    tokens = provider.authorize(client, "bob", scopes=["openid", "notes:read"])
    assert tokens["scope"] == "openid notes:read"
    wider = provider.refresh(client, tokens["refresh_token"], scope="openid notes:read notes:write")
    assert wider.json()["error"] == "invalid_scope"
    narrower = provider.refresh(client, tokens["refresh_token"], scope="notes:read")
    assert narrower.json()["scope"] == "notes:read"


def test_expired_access_token_is_refused_and_refresh_recovers(provider: OAuthProvider) -> None:
    short = provider.register_client([CALLBACK], access_token_ttl=1)
    tokens = provider.authorize(short, "bob")
    assert tokens["expires_in"] == 1
    assert _get(provider, "/api/me", tokens["access_token"]).status_code == 200
    time.sleep(1.2)
    expired = _get(provider, "/api/me", tokens["access_token"])
    assert expired.status_code == 401
    assert "invalid_token" in expired.headers["www-authenticate"]
    fresh = provider.refresh(short, tokens["refresh_token"]).json()
    assert _get(provider, "/api/me", fresh["access_token"]).json()["username"] == "bob"


def test_revocation(provider: OAuthProvider, client: OAuthClient) -> None:
    tokens = provider.authorize(client, "alice")
    auth = (client.client_id, client.client_secret or "")
    revoked = httpx.post(provider.revocation_endpoint, data={"token": tokens["access_token"]}, auth=auth)
    assert revoked.status_code == 200
    assert _get(provider, "/api/me", tokens["access_token"]).status_code == 401
    assert provider.refresh(client, tokens["refresh_token"]).status_code == 200  # an access token alone
    httpx.post(provider.revocation_endpoint, data={"token": tokens["refresh_token"]}, auth=auth)
    assert provider.refresh(client, tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_discovery_and_id_token_verify_with_joserfc(provider: OAuthProvider, client: OAuthClient) -> None:
    meta = httpx.get(provider.discovery_url, trust_env=False).json()
    assert meta["issuer"] == provider.issuer
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert httpx.get(f"{provider.base_url}/.well-known/oauth-authorization-server", trust_env=False).json() == meta
    keys = KeySet.import_key_set(httpx.get(meta["jwks_uri"], trust_env=False).json())
    tokens = provider.authorize(client, "bob", nonce="nonce-123")
    token = jwt.decode(tokens["id_token"], keys, algorithms=["RS256"])
    claims: dict[str, Any] = token.claims
    assert token.header["alg"] == "RS256"
    assert claims["iss"] == provider.issuer
    assert client.client_id in claims["aud"]
    assert claims["exp"] > time.time()
    assert (claims["sub"], claims["nonce"]) == ("user-bob", "nonce-123")
    assert (claims["email"], claims["preferred_username"]) == ("bob@example.test", "bob")
    head, body, sig = tokens["id_token"].split(".")
    forged = f"{head}.{body}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
    with pytest.raises(BadSignatureError):
        jwt.decode(forged, keys, algorithms=["RS256"])
    info = _get(provider, "/userinfo", tokens["access_token"]).json()
    assert info["sub"] == "user-bob" and info["email"] == "bob@example.test"


def test_nonce_replay_is_refused(provider: OAuthProvider, client: OAuthClient) -> None:
    provider.authorize(client, "alice", nonce="once-only")
    _, challenge = pkce_pair()
    url = provider.authorization_url(client, code_challenge=challenge, nonce="once-only", state="s1")
    assert _query(provider.login_and_consent(url, "alice"))["error"] == ["invalid_request"]


def test_pkce_is_required_and_s256_only(provider: OAuthProvider, client: OAuthClient) -> None:
    verifier, challenge = pkce_pair()
    plain = provider.authorization_url(client, code_challenge=verifier).replace("=S256", "=plain")
    assert _query(provider.login_and_consent(plain, "alice"))["error"] == ["invalid_request"]
    missing = provider.authorization_url(client, code_challenge="").replace("code_challenge=&", "")
    assert _query(provider.login_and_consent(missing, "alice"))["error"] == ["invalid_request"]
    url = provider.authorization_url(client, code_challenge=challenge)
    code = _query(provider.login_and_consent(url, "alice"))["code"][0]
    wrong = provider.exchange_code(client, code, pkce_pair()[0])
    assert wrong.json()["error"] == "invalid_grant"


def test_code_is_used_once_and_bound_to_its_redirect_uri(provider: OAuthProvider, client: OAuthClient) -> None:
    verifier, challenge = pkce_pair()
    url = provider.authorization_url(client, code_challenge=challenge)
    code = _query(provider.login_and_consent(url, "bob"))["code"][0]
    other = provider.exchange_code(client, code, verifier, redirect_uri="http://127.0.0.1:9/other")
    assert other.json()["error"] == "invalid_grant"
    assert provider.exchange_code(client, code, verifier).status_code == 200
    assert provider.exchange_code(client, code, verifier).json()["error"] == "invalid_grant"


def test_unknown_redirect_uri_is_refused_without_redirecting(provider: OAuthProvider, client: OAuthClient) -> None:
    _, challenge = pkce_pair()
    url = provider.authorization_url(client, code_challenge=challenge, redirect_uri="http://127.0.0.1:9/callback/x")
    reply = httpx.get(url, trust_env=False)
    assert reply.status_code == 400
    assert "location" not in reply.headers


def test_consent_narrows_scopes_and_deny_sends_access_denied(provider: OAuthProvider, client: OAuthClient) -> None:
    tokens = provider.authorize(client, "alice", scopes=["notes:read"])
    assert tokens["scope"] == "notes:read"
    assert "id_token" not in tokens
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    write = httpx.post(f"{provider.base_url}/api/notes", json={"text": "x"}, headers=headers, trust_env=False)
    assert write.status_code == 403
    assert write.json()["error"] == "insufficient_scope"
    _, challenge = pkce_pair()
    url = provider.authorization_url(client, code_challenge=challenge, state="st-9")
    denied = _query(provider.login_and_consent(url, "alice", approve=False))
    assert denied["error"] == ["access_denied"]
    assert denied["state"] == ["st-9"]
    assert denied["iss"] == [provider.issuer]


def test_public_client_uses_pkce_without_a_secret(provider: OAuthProvider) -> None:
    public = provider.register_client([CALLBACK], public=True)
    assert public.client_secret is None
    tokens = provider.authorize(public, "bob")
    assert _get(provider, "/api/me", tokens["access_token"]).json()["username"] == "bob"


def test_login_form_refuses_a_wrong_password_and_a_missing_csrf_token(
    provider: OAuthProvider, client: OAuthClient
) -> None:
    _, challenge = pkce_pair()
    url = provider.authorization_url(client, code_challenge=challenge)
    with pytest.raises(RuntimeError, match="expected 303, got 401"):
        provider.login_and_consent(url, "alice", password="not-the-password")
    with httpx.Client(trust_env=False) as http:
        http.get(url)
        no_csrf = http.post(f"{provider.base_url}/login", data={"username": "alice", "next": "/authorize?x=1",
                                                                "password": provider.users["alice"]})  # fmt: skip
    assert no_csrf.status_code == 400


def test_admin_endpoints_need_the_admin_token(provider: OAuthProvider) -> None:
    body = {"redirect_uris": [CALLBACK]}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        reply = httpx.post(f"{provider.base_url}/admin/clients", json=body, headers=headers, trust_env=False)
        assert reply.status_code == 401
    password = provider.add_user("carol")
    assert provider.users["carol"] == password
    tokens = provider.authorize(provider.register_client([CALLBACK]), "carol")
    assert _get(provider, "/api/me", tokens["access_token"]).json()["username"] == "carol"


def test_openapi_spec_declares_the_real_authorization_code_flow(provider: OAuthProvider) -> None:
    from openapi_spec_validator import validate

    from codemode import load_spec

    spec = httpx.get(provider.openapi_url, trust_env=False).json()
    validate(spec)
    meta = httpx.get(provider.discovery_url, trust_env=False).json()
    flow = spec["components"]["securitySchemes"]["oauth2"]["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == meta["authorization_endpoint"]
    assert flow["tokenUrl"] == meta["token_endpoint"]
    assert set(flow["scopes"]) == {"notes:read", "notes:write"}
    assert spec["servers"] == [{"url": provider.base_url}]
    loaded = load_spec(provider.openapi_url, use_cache=False)
    assert len(loaded.operations) == 6
    assert loaded.security_schemes["oauth2"].type == "oauth2"


class _Callback(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = b"<html><body><p id=cb>callback received</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _callback_server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Callback", (_Callback,), {"hits": hits}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/callback", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_login_and_consent_in_chromium(provider: OAuthProvider, page: Page) -> None:
    with _callback_server() as (callback, hits):
        web = provider.register_client([callback])
        verifier, challenge = pkce_pair()
        page.goto(provider.authorization_url(web, code_challenge=challenge, state="browser-1"))
        page.get_by_label("Username").fill("bob")
        page.get_by_label("Password").fill(provider.users["bob"])
        page.get_by_role("button", name="Sign in").click()
        assert page.text_content("#user") == "bob"
        page.get_by_label("notes:write", exact=False).uncheck()
        page.get_by_role("button", name="Approve").click()
        page.wait_for_selector("#cb")
    (path,) = [hit for hit in hits if hit.startswith("/callback?")]  # Chromium also asks for /favicon.ico
    query = _query(path)
    assert query["state"] == ["browser-1"] and query["iss"] == [provider.issuer]
    tokens = provider.exchange_code(web, query["code"][0], verifier).json()
    assert "notes:write" not in tokens["scope"].split()
    assert _get(provider, "/api/me", tokens["access_token"]).json()["username"] == "bob"
