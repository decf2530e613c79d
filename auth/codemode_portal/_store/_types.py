"""Records the store keeps, and the :class:`Store` protocol (sync; see ``AsyncStore`` for the loop)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from ._upstream_types import UpstreamStore

__all__ = [
    "AuditRow",
    "AuthCode",
    "Client",
    "Grant",
    "Store",
    "TokenKind",
    "TokenRecord",
    "TokenView",
    "User",
]

TokenKind = Literal["access", "refresh"]


@dataclass(frozen=True)
class User:
    id: str
    name: str
    password_hash: str
    created_at: float
    is_admin: bool = False
    disabled: bool = False


@dataclass(frozen=True)
class Client:
    """A registered (RFC 7591) or metadata-document (CIMD) client. Only the secret's hash is kept."""

    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    auth_method: str  # none | client_secret_basic | client_secret_post
    kind: Literal["dcr", "cimd"]
    created_at: float
    secret_hash: str | None = None
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    client_uri: str | None = None
    metadata_json: str = "{}"  # the validated metadata, for display; never a secret


@dataclass(frozen=True)
class Grant:
    """What one user allowed one client on one server: every code and token carries its id."""

    id: str
    user_id: str
    client_id: str
    server: str
    resource: str
    scopes: tuple[str, ...]
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class AuthCode:
    hash: str
    grant_id: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    resource: str
    scopes: tuple[str, ...]
    expires_at: float
    used_at: float | None = None


@dataclass(frozen=True)
class TokenRecord:
    hash: str
    kind: TokenKind
    grant_id: str
    client_id: str
    user_id: str
    server: str
    resource: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    used_at: float | None = None  # refresh tokens: when rotated


@dataclass(frozen=True)
class TokenView:
    """A token with the state of its grant: what every check needs, in one lookup."""

    token: TokenRecord
    grant_revoked: bool

    def usable(self, now: float) -> bool:
        t = self.token
        return not self.grant_revoked and t.revoked_at is None and t.used_at is None and t.expires_at > now


@dataclass(frozen=True)
class AuditRow:
    """One audit event. Never a secret or a payload: names, ids and statuses only."""

    at: float
    event: str
    user_id: str | None = None
    client_id: str | None = None
    server: str | None = None
    operation: str | None = None
    status: str | None = None
    detail: str | None = None
    id: int | None = field(default=None, compare=False)


class Store(UpstreamStore, Protocol):
    """The portal's storage seam. Synchronous; every method is one short transaction.

    Implemented on SQLAlchemy Core (``SqlStore``: SQLite or PostgreSQL) and in memory
    (``MemoryStore``, for unit tests). Call it from the event loop through ``AsyncStore``.
    """

    # -- health -------------------------------------------------------------------------
    def ping(self) -> None: ...
    def close(self) -> None: ...

    # -- users ----------------------------------------------------------------------------
    def create_user(self, user: User) -> None:
        """Raises ``StoreConflict`` when the name is taken."""
        ...

    def find_user(self, name: str) -> User | None: ...
    def get_user(self, user_id: str) -> User | None: ...
    def list_users(self) -> list[User]: ...
    def set_password(self, user_id: str, password_hash: str) -> None: ...
    def set_disabled(self, user_id: str, disabled: bool) -> None: ...

    # -- clients --------------------------------------------------------------------------
    def save_client(self, client: Client) -> None:
        """Insert or replace (CIMD documents are fetched again)."""
        ...

    def find_client(self, client_id: str) -> Client | None: ...
    def list_clients(self) -> list[Client]: ...

    # -- grants, codes, tokens ------------------------------------------------------------
    def create_grant(self, grant: Grant) -> None: ...
    def get_grant(self, grant_id: str) -> Grant | None: ...
    def list_grants(self, *, user_id: str | None = None, active_only: bool = True) -> list[Grant]: ...
    def revoke_grant(self, grant_id: str, at: float) -> bool:
        """Revoke the grant and every code and token of it. False if it was already revoked/unknown."""
        ...

    def save_code(self, code: AuthCode) -> None: ...
    def find_code(self, code_hash: str) -> AuthCode | None: ...
    def take_code(self, code_hash: str, at: float) -> bool:
        """Mark the code used, atomically. False if it was already used (a replay)."""
        ...

    def save_tokens(self, *tokens: TokenRecord) -> None: ...
    def find_token(self, token_hash: str) -> TokenView | None: ...
    def rotate_refresh(self, old_hash: str, new_tokens: tuple[TokenRecord, ...], at: float) -> bool:
        """Mark the refresh token used and save its successors in one transaction.

        False (and nothing saved) if it was already used or revoked: the caller treats that as a replay.
        """
        ...

    def revoke_token(self, token_hash: str, at: float) -> None: ...
    def list_tokens(self, *, active_at: float | None = None) -> list[TokenRecord]: ...

    # -- login sessions, rate events, secrets ---------------------------------------------
    def create_session(self, session_hash: str, user_id: str, expires_at: float) -> None: ...
    def find_session(self, session_hash: str, now: float) -> str | None:
        """The user id of a live session."""
        ...

    def delete_session(self, session_hash: str) -> None: ...
    def end_sessions(self, user_id: str) -> int:
        """Delete every sign-in session of the user (every browser); how many there were."""
        ...

    def add_rate_event(self, key: str, at: float) -> None: ...
    def count_rate_events(self, key: str, since: float) -> int: ...
    def clear_rate_events(self, key: str) -> None: ...
    def get_or_create_secret(self, name: str, value: str) -> str:
        """The stored value of ``name``; stores ``value`` first if there is none (first writer wins)."""
        ...

    # -- audit ----------------------------------------------------------------------------
    def record_audit(self, rows: list[AuditRow]) -> None: ...
    def list_audit(
        self, *, since: float | None = None, server: str | None = None, limit: int = 1000
    ) -> list[AuditRow]: ...

    # -- housekeeping ---------------------------------------------------------------------
    def purge(
        self, now: float, *, unused_clients_before: float | None = None, audit_before: float | None = None
    ) -> int:
        """Housekeeping; the number of rows removed or closed. Deletes expired codes (a day after
        expiry), sessions, tokens and old rate events; closes (``revoked_at``) grants a day old that
        nothing can use any more (no live token, no usable code); deletes metadata-document clients
        no grant refers to (fetched again when used), registered clients no grant refers to that
        were created before ``unused_clients_before``, and audit rows before ``audit_before``."""
        ...
