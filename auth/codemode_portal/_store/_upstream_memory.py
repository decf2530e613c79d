"""``UpstreamStore`` in memory: mixed into ``MemoryStore`` (same lock), same semantics as SQL."""

from __future__ import annotations

import threading
from dataclasses import replace

from .._errors import StoreConflict
from ._upstream_types import ExternalIdentity, PendingFlow, UpstreamCredential

__all__ = ["UpstreamMemoryMixin"]


class UpstreamMemoryMixin:
    """Needs ``_lock``; call ``_init_upstream()`` from ``__init__``."""

    _lock: threading.RLock

    def _init_upstream(self) -> None:
        self.upstream: dict[tuple[str, str], UpstreamCredential] = {}
        self.flows: dict[str, PendingFlow] = {}
        self.identities: dict[tuple[str, str], ExternalIdentity] = {}

    # -- per-user upstream credentials ------------------------------------------------------
    def put_upstream_credential(self, cred: UpstreamCredential) -> None:
        with self._lock:
            self.upstream[(cred.user_id, cred.server)] = cred

    def get_upstream_credential(self, user_id: str, server: str) -> UpstreamCredential | None:
        with self._lock:
            return self.upstream.get((user_id, server))

    def list_upstream_credentials(self, *, user_id: str | None = None) -> list[UpstreamCredential]:
        with self._lock:
            out = [c for c in self.upstream.values() if user_id is None or c.user_id == user_id]
        return sorted(out, key=lambda c: (c.user_id, c.server))

    def delete_upstream_credential(self, user_id: str, server: str) -> UpstreamCredential | None:
        with self._lock:
            return self.upstream.pop((user_id, server), None)

    def claim_upstream_refresh(self, user_id: str, server: str, version: int, until: float, now: float) -> bool:
        with self._lock:
            cred = self.upstream.get((user_id, server))
            if cred is None or cred.version != version or (cred.lease_until is not None and cred.lease_until >= now):
                return False
            self.upstream[(user_id, server)] = replace(cred, lease_until=until)
            return True

    def swap_upstream_credential(self, cred: UpstreamCredential, expected_version: int) -> bool:
        with self._lock:
            old = self.upstream.get((cred.user_id, cred.server))
            if old is None or old.version != expected_version:
                return False
            self.upstream[(cred.user_id, cred.server)] = cred
            return True

    # -- pending OAuth flows ------------------------------------------------------------------
    def save_pending_flow(self, flow: PendingFlow, now: float) -> None:
        with self._lock:
            self.flows = {h: f for h, f in self.flows.items() if f.expires_at >= now}
            if flow.state_hash in self.flows:
                raise StoreConflict("state taken", code="portal.store.conflict")
            self.flows[flow.state_hash] = flow

    def take_pending_flow(self, state_hash: str, now: float) -> PendingFlow | None:
        with self._lock:
            flow = self.flows.pop(state_hash, None)
        return flow if flow is not None and flow.expires_at > now else None

    # -- external identities --------------------------------------------------------------------
    def find_external_identity(self, issuer: str, subject: str) -> ExternalIdentity | None:
        with self._lock:
            return self.identities.get((issuer, subject))

    def add_external_identity(self, identity: ExternalIdentity) -> None:
        with self._lock:
            key = (identity.issuer, identity.subject)
            if key in self.identities:
                raise StoreConflict("that identity is already mapped", code="portal.store.conflict")
            self.identities[key] = identity

    def list_external_identities(self, *, user_id: str | None = None) -> list[ExternalIdentity]:
        with self._lock:
            out = [i for i in self.identities.values() if user_id is None or i.user_id == user_id]
        return sorted(out, key=lambda i: i.created_at)

    def touch_external_identity(self, issuer: str, subject: str, at: float) -> None:
        with self._lock:
            found = self.identities.get((issuer, subject))
            if found is not None:
                self.identities[(issuer, subject)] = replace(found, last_login_at=at)

    def delete_external_identity(self, issuer: str, subject: str) -> bool:
        with self._lock:
            return self.identities.pop((issuer, subject), None) is not None
