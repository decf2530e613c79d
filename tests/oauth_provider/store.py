"""In-memory state of the test OAuth provider: users, clients, codes, tokens and each user's notes.

The model classes implement the mixins authlib's server side asks for. One lock guards every
change, because the server answers requests on several threads.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin
from authlib.oidc.core import AuthorizationCodeMixin

__all__ = ["AuthCode", "Client", "Store", "Token", "User"]

CODE_LIFETIME_SECONDS = 300
REFRESH_LIFETIME_SECONDS = 24 * 3600


@dataclass
class User:
    username: str
    password: str = field(repr=False)

    @property
    def sub(self) -> str:
        return f"user-{self.username}"

    @property
    def email(self) -> str:
        return f"{self.username}@example.test"

    def check_password(self, password: str) -> bool:
        return hmac.compare_digest(self.password.encode(), password.encode())


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str | None  # None: a public client (token endpoint auth "none", PKCE only)
    redirect_uris: list[str]
    scope: str
    access_token_ttl: int | None = None  # None: the provider's default

    @property
    def token_endpoint_auth_method(self) -> str:
        return "none" if self.client_secret is None else "client_secret_basic"

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(self.scope.split())
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact match only

    def check_client_secret(self, client_secret: str) -> bool:
        if self.client_secret is None:
            return False
        return hmac.compare_digest(self.client_secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.client_secret is None:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")

    def public(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": self.redirect_uris,
            "scope": self.scope,
            "access_token_ttl": self.access_token_ttl,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
        }


@dataclass
class AuthCode(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    client_id: str
    username: str
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    auth_time: int
    issued_at: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def is_expired(self) -> bool:
        return time.time() > self.issued_at + CODE_LIFETIME_SECONDS


@dataclass
class Token(TokenMixin):  # type: ignore[misc]
    client: Client
    user: User
    scope: str
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: int
    issued_at: float = field(default_factory=time.time)
    access_revoked: bool = False
    refresh_revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return bool(self.client.client_id == client.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_refresh_expired(self) -> bool:
        return time.time() >= self.issued_at + REFRESH_LIFETIME_SECONDS

    def is_revoked(self) -> bool:
        return self.access_revoked

    def get_user(self) -> User:
        return self.user

    def get_client(self) -> Client:
        return self.client


class Store:
    """Everything the provider knows, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users: dict[str, User] = {}
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, AuthCode] = {}
        self.used_nonces: set[tuple[str, str]] = set()
        self.by_access: dict[str, Token] = {}
        self.by_refresh: dict[str, Token] = {}
        self.notes: dict[str, dict[int, dict[str, Any]]] = {}
        self.next_note_id = 1

    def add_user(self, username: str, password: str | None = None) -> User:
        with self.lock:
            user = User(username, password or secrets.token_urlsafe(12))
            self.users[username] = user
            self.notes.setdefault(username, {})
            return user

    def add_client(self, client: Client) -> Client:
        with self.lock:
            self.clients[client.client_id] = client
            return client

    def save_code(self, code: AuthCode) -> None:
        with self.lock:
            self.codes[code.code] = code
            if code.nonce:
                self.used_nonces.add((code.client_id, code.nonce))

    def take_code(self, code: str, client_id: str) -> AuthCode | None:
        """The code if it is live and the client's; codes are used once."""
        with self.lock:
            found = self.codes.get(code)
            if found is None or found.client_id != client_id or found.is_expired():
                return None
            return found

    def delete_code(self, code: str) -> None:
        with self.lock:
            self.codes.pop(code, None)

    def save_token(self, token: Token) -> None:
        with self.lock:
            self.by_access[token.access_token] = token
            if token.refresh_token:
                self.by_refresh[token.refresh_token] = token

    def access(self, value: str) -> Token | None:
        with self.lock:
            return self.by_access.get(value)

    def refresh(self, value: str) -> Token | None:
        with self.lock:
            token = self.by_refresh.get(value)
            if token is None or token.refresh_revoked or token.is_refresh_expired():
                return None
            return token
