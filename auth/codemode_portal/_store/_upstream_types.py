"""Records for each user's own upstream credentials, pending OAuth flows and external identities,
and the part of the :class:`Store` protocol that keeps them (``UpstreamStore``).

Secrets in these records are always *sealed* (``_box.SecretBox``): the store never sees a clear
API key, access token, refresh token or PKCE verifier. State values are kept as SHA-256 hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "CredentialKind",
    "CredentialStatus",
    "ExternalIdentity",
    "FlowPurpose",
    "PendingFlow",
    "UpstreamCredential",
    "UpstreamStore",
]

CredentialKind = Literal["key", "oauth"]
CredentialStatus = Literal["ok", "broken"]
FlowPurpose = Literal["link", "login"]


@dataclass(frozen=True)
class UpstreamCredential:
    """One user's credential for one per-user server.

    ``kind="key"``: a pasted API key or token (``secret``). ``kind="oauth"``: an upstream account
    linked through its authorization-code flow (``secret`` = access token, ``refresh`` = refresh
    token). ``status="broken"``: the upstream refused the refresh token; the user must link again.
    ``version`` grows by one on every change (compare-and-swap between replicas); ``lease_until``
    marks a refresh in progress somewhere.
    """

    user_id: str
    server: str
    kind: CredentialKind
    scheme: str
    secret: str
    created_at: float
    updated_at: float
    refresh: str | None = None
    expires_at: float | None = None
    scopes: tuple[str, ...] = ()
    status: CredentialStatus = "ok"
    version: int = 1
    lease_until: float | None = None


@dataclass(frozen=True)
class PendingFlow:
    """An OAuth authorization request in flight (upstream linking or OpenID Connect login).

    Bound to the browser session that started it (``session_hash``) and, for a link, to the user;
    taken exactly once by the callback.
    """

    state_hash: str
    purpose: FlowPurpose
    session_hash: str
    verifier: str  # sealed PKCE code verifier
    created_at: float
    expires_at: float
    server: str | None = None
    user_id: str | None = None
    nonce: str | None = None
    next_url: str | None = None


@dataclass(frozen=True)
class ExternalIdentity:
    """A portal user known to an external OpenID Connect provider as (issuer, subject)."""

    issuer: str
    subject: str
    user_id: str
    created_at: float
    last_login_at: float | None = None


class UpstreamStore(Protocol):
    """Storage of per-user upstream credentials, pending flows and external identities."""

    # -- per-user upstream credentials ------------------------------------------------------
    def put_upstream_credential(self, cred: UpstreamCredential) -> None:
        """Insert, or replace the user's credential for that server."""
        ...

    def get_upstream_credential(self, user_id: str, server: str) -> UpstreamCredential | None: ...
    def list_upstream_credentials(self, *, user_id: str | None = None) -> list[UpstreamCredential]: ...
    def delete_upstream_credential(self, user_id: str, server: str) -> UpstreamCredential | None:
        """Remove it; returns what was removed (to revoke it upstream), or None."""
        ...

    def claim_upstream_refresh(self, user_id: str, server: str, version: int, until: float, now: float) -> bool:
        """Take the refresh lease of a credential still at ``version`` and not leased by anyone else."""
        ...

    def swap_upstream_credential(self, cred: UpstreamCredential, expected_version: int) -> bool:
        """Replace the credential only if it is still at ``expected_version`` (compare-and-swap)."""
        ...

    # -- pending OAuth flows ------------------------------------------------------------------
    def save_pending_flow(self, flow: PendingFlow, now: float) -> None:
        """Store a flow (and drop flows that expired before ``now``)."""
        ...

    def take_pending_flow(self, state_hash: str, now: float) -> PendingFlow | None:
        """Remove and return the live flow of that state, atomically: a second take gets None."""
        ...

    # -- external identities --------------------------------------------------------------------
    def find_external_identity(self, issuer: str, subject: str) -> ExternalIdentity | None: ...
    def add_external_identity(self, identity: ExternalIdentity) -> None:
        """Raises ``StoreConflict`` when (issuer, subject) is already mapped."""
        ...

    def list_external_identities(self, *, user_id: str | None = None) -> list[ExternalIdentity]: ...
    def touch_external_identity(self, issuer: str, subject: str, at: float) -> None: ...
    def delete_external_identity(self, issuer: str, subject: str) -> bool: ...
