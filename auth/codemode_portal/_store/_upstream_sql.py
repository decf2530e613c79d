"""``UpstreamStore`` on SQLAlchemy Core: mixed into ``SqlStore`` (same engine, same transactions)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, delete, insert, or_, select
from sqlalchemy import update as sa_update

from . import _schema as t
from ._upstream_types import ExternalIdentity, PendingFlow, UpstreamCredential

__all__ = ["UpstreamSqlMixin"]

DELETE_ATTEMPTS = 5


def _credential(r: RowMapping) -> UpstreamCredential:
    return UpstreamCredential(
        user_id=r["user_id"], server=r["server"], kind=r["kind"], scheme=r["scheme"], secret=r["secret"],
        refresh=r["refresh"], expires_at=r["expires_at"], scopes=tuple(r["scopes"].split()) if r["scopes"] else (),
        status=r["status"], version=int(r["version"]), lease_until=r["lease_until"], created_at=r["created_at"],
        updated_at=r["updated_at"],
    )  # fmt: skip


def _credential_values(c: UpstreamCredential) -> dict[str, Any]:
    return {
        "user_id": c.user_id, "server": c.server, "kind": c.kind, "scheme": c.scheme, "secret": c.secret,
        "refresh": c.refresh, "expires_at": c.expires_at, "scopes": " ".join(c.scopes), "status": c.status,
        "version": c.version, "lease_until": c.lease_until, "created_at": c.created_at, "updated_at": c.updated_at,
    }  # fmt: skip


def _flow(r: RowMapping) -> PendingFlow:
    return PendingFlow(
        state_hash=r["state_hash"], purpose=r["purpose"], session_hash=r["session_hash"], verifier=r["verifier"],
        server=r["server"], user_id=r["user_id"], nonce=r["nonce"], next_url=r["next_url"],
        created_at=r["created_at"], expires_at=r["expires_at"],
    )  # fmt: skip


def _identity(r: RowMapping) -> ExternalIdentity:
    return ExternalIdentity(issuer=r["issuer"], subject=r["subject"], user_id=r["user_id"],
                            created_at=r["created_at"], last_login_at=r["last_login_at"])  # fmt: skip


class UpstreamSqlMixin:
    """Needs ``_tx()``: one transaction on the store's engine (``SqlStore`` provides it)."""

    _tx: Callable[[], AbstractContextManager[Connection]]

    # -- per-user upstream credentials ------------------------------------------------------
    def put_upstream_credential(self, cred: UpstreamCredential) -> None:
        c_ = t.upstream_credentials.c
        values = _credential_values(cred)
        with self._tx() as c:
            done = c.execute(
                sa_update(t.upstream_credentials).where(c_.user_id == cred.user_id, c_.server == cred.server)
                .values(**values)
            )  # fmt: skip
            if done.rowcount == 0:
                c.execute(insert(t.upstream_credentials).values(**values))

    def get_upstream_credential(self, user_id: str, server: str) -> UpstreamCredential | None:
        c_ = t.upstream_credentials.c
        with self._tx() as c:
            r = c.execute(
                select(t.upstream_credentials).where(c_.user_id == user_id, c_.server == server)
            ).mappings().first()  # fmt: skip
        return _credential(r) if r else None

    def list_upstream_credentials(self, *, user_id: str | None = None) -> list[UpstreamCredential]:
        c_ = t.upstream_credentials.c
        q = select(t.upstream_credentials).order_by(c_.user_id, c_.server)
        if user_id is not None:
            q = q.where(c_.user_id == user_id)
        with self._tx() as c:
            return [_credential(r) for r in c.execute(q).mappings()]

    def delete_upstream_credential(self, user_id: str, server: str) -> UpstreamCredential | None:
        c_ = t.upstream_credentials.c
        where = and_(c_.user_id == user_id, c_.server == server)
        for _ in range(DELETE_ATTEMPTS):
            with self._tx() as c:
                r = c.execute(select(t.upstream_credentials).where(where)).mappings().first()
                if r is None:
                    return None
                # Delete exactly the version read, so the caller revokes the tokens that were removed;
                # a refresh that swapped in newer ones meanwhile makes this read again.
                done = c.execute(delete(t.upstream_credentials).where(where, c_.version == r["version"]))
                if done.rowcount == 1:
                    return _credential(r)
        with self._tx() as c:  # changing faster than it can be read: remove whatever is there
            c.execute(delete(t.upstream_credentials).where(where))
        return None

    def claim_upstream_refresh(self, user_id: str, server: str, version: int, until: float, now: float) -> bool:
        c_ = t.upstream_credentials.c
        with self._tx() as c:
            done = c.execute(
                sa_update(t.upstream_credentials)
                .where(c_.user_id == user_id, c_.server == server, c_.version == version,
                       or_(c_.lease_until.is_(None), c_.lease_until < now))
                .values(lease_until=until)
            )  # fmt: skip
            return done.rowcount == 1

    def swap_upstream_credential(self, cred: UpstreamCredential, expected_version: int) -> bool:
        c_ = t.upstream_credentials.c
        with self._tx() as c:
            done = c.execute(
                sa_update(t.upstream_credentials)
                .where(c_.user_id == cred.user_id, c_.server == cred.server, c_.version == expected_version)
                .values(**_credential_values(cred))
            )  # fmt: skip
            return done.rowcount == 1

    # -- pending OAuth flows ------------------------------------------------------------------
    def save_pending_flow(self, flow: PendingFlow, now: float) -> None:
        f = t.pending_flows
        with self._tx() as c:
            c.execute(delete(f).where(f.c.expires_at < now))
            c.execute(insert(f).values(
                state_hash=flow.state_hash, purpose=flow.purpose, session_hash=flow.session_hash,
                verifier=flow.verifier, server=flow.server, user_id=flow.user_id, nonce=flow.nonce,
                next_url=flow.next_url, created_at=flow.created_at, expires_at=flow.expires_at,
            ))  # fmt: skip

    def take_pending_flow(self, state_hash: str, now: float) -> PendingFlow | None:
        f = t.pending_flows
        with self._tx() as c:
            r = c.execute(select(f).where(f.c.state_hash == state_hash)).mappings().first()
            if r is None:
                return None
            # Only the transaction whose delete removed the row may use it (a concurrent take gets 0 rows).
            done = c.execute(delete(f).where(f.c.state_hash == state_hash))
            if done.rowcount != 1 or r["expires_at"] <= now:
                return None
            return _flow(r)

    # -- external identities --------------------------------------------------------------------
    def find_external_identity(self, issuer: str, subject: str) -> ExternalIdentity | None:
        e = t.external_identities
        with self._tx() as c:
            r = c.execute(select(e).where(e.c.issuer == issuer, e.c.subject == subject)).mappings().first()
        return _identity(r) if r else None

    def add_external_identity(self, identity: ExternalIdentity) -> None:
        with self._tx() as c:
            c.execute(insert(t.external_identities).values(
                issuer=identity.issuer, subject=identity.subject, user_id=identity.user_id,
                created_at=identity.created_at, last_login_at=identity.last_login_at,
            ))  # fmt: skip

    def list_external_identities(self, *, user_id: str | None = None) -> list[ExternalIdentity]:
        e = t.external_identities
        q = select(e).order_by(e.c.created_at)
        if user_id is not None:
            q = q.where(e.c.user_id == user_id)
        with self._tx() as c:
            return [_identity(r) for r in c.execute(q).mappings()]

    def touch_external_identity(self, issuer: str, subject: str, at: float) -> None:
        e = t.external_identities
        with self._tx() as c:
            c.execute(sa_update(e).where(e.c.issuer == issuer, e.c.subject == subject).values(last_login_at=at))

    def delete_external_identity(self, issuer: str, subject: str) -> bool:
        e = t.external_identities
        with self._tx() as c:
            return bool(c.execute(delete(e).where(e.c.issuer == issuer, e.c.subject == subject)).rowcount)
