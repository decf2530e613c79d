"""The test OAuth 2.0 + OpenID Connect provider (tests/oauth_provider/app.py) as a context manager.

``oauth_provider()`` starts the provider from ``.venv-upstreams`` on a free 127.0.0.1 port, waits
until its discovery document answers, yields an :class:`OAuthProvider`, and stops it on exit.
The provider plays two roles in the portal's tests: an upstream API whose users each have their
own identity (``/api/me``, ``/api/notes``, described with an ``oauth2`` scheme by
``/openapi.json``), and an external OpenID Connect login provider.

:meth:`OAuthProvider.login_and_consent` completes the sign-in and consent pages with plain httpx
(the way a person would with a browser) and returns the redirect to the client's callback;
:meth:`OAuthProvider.authorize` runs a whole code + PKCE flow and returns the token response.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest
from upstreams import free_port, serve_subprocess, upstreams_bin

__all__ = ["ALL_SCOPES", "OAuthClient", "OAuthProvider", "oauth_provider", "pkce_pair"]

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "oauth_provider" / "app.py"
ALL_SCOPES = ("openid", "profile", "email", "notes:read", "notes:write")
HTTP_TIMEOUT_SECONDS = 10.0
SKIP_REASON = "authlib is not installed in .venv-upstreams: run scripts/setup-upstreams.sh"


@dataclass(frozen=True)
class OAuthClient:
    """A client registered with the provider. ``client_secret=None`` is a public client."""

    client_id: str
    client_secret: str | None = field(repr=False)
    redirect_uris: tuple[str, ...]
    scope: str = " ".join(ALL_SCOPES)
    access_token_ttl: int | None = None

    @property
    def redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def as_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": list(self.redirect_uris),
            "scope": self.scope,
            "access_token_ttl": self.access_token_ttl,
        }


def pkce_pair() -> tuple[str, str]:
    """A fresh ``(code_verifier, S256 code_challenge)``."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class OAuthProvider:
    """A running provider: its URLs, its users (name -> password) and helpers to drive it."""

    base_url: str
    users: dict[str, str] = field(repr=False)
    admin_token: str = field(repr=False)

    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def discovery_url(self) -> str:
        return f"{self.base_url}/.well-known/openid-configuration"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.base_url}/authorize"

    @property
    def token_endpoint(self) -> str:
        return f"{self.base_url}/token"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.base_url}/revoke"

    @property
    def userinfo_endpoint(self) -> str:
        return f"{self.base_url}/userinfo"

    @property
    def jwks_uri(self) -> str:
        return f"{self.base_url}/jwks.json"

    @property
    def openapi_url(self) -> str:
        return f"{self.base_url}/openapi.json"

    def _http(self) -> httpx.Client:
        return httpx.Client(timeout=HTTP_TIMEOUT_SECONDS, trust_env=False, follow_redirects=False)

    def _admin(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._http() as http:
            reply = http.post(
                f"{self.base_url}{path}", json=body, headers={"Authorization": f"Bearer {self.admin_token}"}
            )
        if reply.status_code != 201:
            raise RuntimeError(f"POST {path} gave {reply.status_code}: {reply.text[:500]}")
        result: dict[str, Any] = reply.json()
        return result

    def register_client(
        self,
        redirect_uris: Sequence[str],
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        public: bool = False,
        scope: str | None = None,
        access_token_ttl: int | None = None,
    ) -> OAuthClient:
        """Register a client (exact redirect URIs) through the admin endpoint; the secret is generated
        unless given (a portal under test can then be configured before its port is known)."""
        body: dict[str, Any] = {"redirect_uris": list(redirect_uris), "access_token_ttl": access_token_ttl}
        if client_id:
            body["client_id"] = client_id
        if public:
            body["client_secret"] = None
        elif client_secret:
            body["client_secret"] = client_secret
        if scope:
            body["scope"] = scope
        made = self._admin("/admin/clients", body)
        return OAuthClient(
            made["client_id"], made["client_secret"], tuple(made["redirect_uris"]), made["scope"], access_token_ttl
        )

    def add_user(self, username: str, password: str | None = None) -> str:
        """Add a user (or reset one's password); returns the password."""
        made = self._admin("/admin/users", {"username": username, "password": password})
        self.users[username] = made["password"]
        return str(made["password"])

    def authorization_url(
        self,
        client: OAuthClient,
        *,
        code_challenge: str,
        scope: str = " ".join(ALL_SCOPES),
        state: str | None = None,
        nonce: str | None = None,
        redirect_uri: str | None = None,
    ) -> str:
        params = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": redirect_uri or client.redirect_uri,
            "scope": scope,
            "state": state or secrets.token_urlsafe(12),
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if nonce:
            params["nonce"] = nonce
        return f"{self.authorization_endpoint}?{urlencode(params)}"

    def login_and_consent(
        self,
        authorization_url: str,
        username: str,
        *,
        password: str | None = None,
        scopes: Sequence[str] | None = None,
        approve: bool = True,
    ) -> str:
        """Sign in as ``username`` on the form, approve (only ``scopes``, if given) or deny.

        Returns the ``Location`` the provider redirects to: the client's callback URL with ``code``
        (or ``error``), ``state`` and ``iss``. Nothing is sent to the callback.
        """
        with self._http() as http:
            page = http.get(authorization_url)
            if page.status_code in (302, 303):
                return page.headers["location"]  # an error the provider sends back to the client
            _expect(page, 200, "the authorization page")
            form = _form(page.text)
            if "password" in form.fields:
                fields = {**form.fields, "username": username, "password": password or self.users[username]}
                signed_in = http.post(urljoin(self.base_url, form.action), data=fields)
                _expect(signed_in, 303, "signing in")
                page = http.get(urljoin(self.base_url, signed_in.headers["location"]))
                _expect(page, 200, "the consent page")
                form = _form(page.text)
            granted = form.checkboxes if scopes is None else [s for s in form.checkboxes if s in scopes]
            data: dict[str, str | list[str]] = {**form.fields, "grant_scope": granted}
            data["decision"] = "approve" if approve else "deny"
            decided = http.post(urljoin(self.base_url, form.action), data=data)
            _expect(decided, 302, "the consent decision")
            return decided.headers["location"]

    def exchange_code(
        self, client: OAuthClient, code: str, verifier: str, redirect_uri: str | None = None
    ) -> httpx.Response:
        """POST the code to the token endpoint (client_secret_basic, or client_id alone if public)."""
        data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                "redirect_uri": redirect_uri or client.redirect_uri}  # fmt: skip
        return self.token_request(client, data)

    def refresh(self, client: OAuthClient, refresh_token: str, scope: str | None = None) -> httpx.Response:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scope:
            data["scope"] = scope
        return self.token_request(client, data)

    def token_request(self, client: OAuthClient, data: dict[str, str]) -> httpx.Response:
        with self._http() as http:
            if client.client_secret is None:  # a public client: its id in the body, no secret
                return http.post(self.token_endpoint, data={**data, "client_id": client.client_id})
            return http.post(self.token_endpoint, data=data, auth=(client.client_id, client.client_secret))

    def authorize(
        self,
        client: OAuthClient,
        username: str,
        *,
        scope: str = " ".join(ALL_SCOPES),
        scopes: Sequence[str] | None = None,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        """A whole authorization-code + PKCE flow for ``username``; returns the token response."""
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(12)
        url = self.authorization_url(client, code_challenge=challenge, scope=scope, state=state, nonce=nonce)
        callback = self.login_and_consent(url, username, scopes=scopes)
        query = parse_qs(urlsplit(callback).query)
        if query.get("state") != [state] or "code" not in query:
            raise RuntimeError(f"the provider redirected to {callback!r} without a code for state {state!r}")
        reply = self.exchange_code(client, query["code"][0], verifier)
        _expect(reply, 200, "the code exchange")
        tokens: dict[str, Any] = reply.json()
        return tokens


@contextlib.contextmanager
def oauth_provider(
    *,
    users: Sequence[str] = ("alice", "bob"),
    clients: Sequence[OAuthClient] = (),
    access_token_ttl: int = 3600,
) -> Iterator[OAuthProvider]:
    """Start the provider on a free loopback port with ``users`` (random passwords) and ``clients``."""
    python = upstreams_bin("python")
    venv = python.parent.parent
    if not any(venv.glob("lib/python3*/site-packages/authlib/__init__.py")):
        pytest.skip(SKIP_REASON)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    passwords = {name: secrets.token_urlsafe(12) for name in users}
    admin_token = secrets.token_urlsafe(24)
    argv: list[str | Path] = [python, APP, "--port", str(port), f"--admin-token={admin_token}",
                              "--access-token-ttl", str(access_token_ttl)]  # fmt: skip
    for name, password in passwords.items():
        argv += ["--user", f"{name}:{password}"]
    for client in clients:
        argv += ["--client", json.dumps(client.as_json())]
    with serve_subprocess("oauth provider", argv, f"{base}/.well-known/openid-configuration", cwd=ROOT):
        yield OAuthProvider(base, dict(passwords), admin_token)


@dataclass
class _Form:
    action: str = ""
    fields: dict[str, str] = field(default_factory=dict)  # hidden and text inputs
    checkboxes: list[str] = field(default_factory=list)  # values of the checked grant_scope boxes


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.form: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "form" and self.form is None:
            self.form = _Form(action=attr.get("action", ""))
        elif tag == "input" and self.form is not None and attr.get("name"):
            if attr.get("type") == "checkbox":
                if "checked" in attr:
                    self.form.checkboxes.append(attr.get("value", ""))
            else:
                self.form.fields[attr["name"]] = attr.get("value", "")


def _form(html: str) -> _Form:
    parser = _FormParser()
    parser.feed(html)
    if parser.form is None:
        raise RuntimeError(f"no form on the provider's page: {html[:300]!r}")
    return parser.form


def _expect(reply: httpx.Response, status: int, what: str) -> None:
    if reply.status_code != status:
        raise RuntimeError(f"{what}: expected {status}, got {reply.status_code}: {reply.text[:500]}")
