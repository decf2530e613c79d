"""An in-memory :class:`Store` with the same semantics as ``SqlStore``, for fast unit tests."""

from __future__ import annotations

import threading
from dataclasses import replace
from itertools import count

from .._errors import StoreConflict
from ._types import AuditRow, AuthCode, Client, Grant, TokenRecord, TokenView, User
from ._upstream_memory import UpstreamMemoryMixin

__all__ = ["MemoryStore"]

RATE_EVENT_MAX_AGE = 86_400.0


class MemoryStore(UpstreamMemoryMixin):
    """Everything in dicts under one lock (each method is one "transaction")."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.users: dict[str, User] = {}
        self.clients: dict[str, Client] = {}
        self.grants: dict[str, Grant] = {}
        self.codes: dict[str, AuthCode] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self.sessions: dict[str, tuple[str, float]] = {}
        self.rate: list[tuple[str, float]] = []
        self.secrets: dict[str, str] = {}
        self.audit: list[AuditRow] = []
        self._ids = count(1)
        self.closed = False
        self._init_upstream()

    def ping(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    # -- users ----------------------------------------------------------------------------
    def create_user(self, user: User) -> None:
        with self._lock:
            if user.id in self.users or any(u.name == user.name for u in self.users.values()):
                raise StoreConflict("that name or id is already taken", code="portal.store.conflict")
            self.users[user.id] = user

    def find_user(self, name: str) -> User | None:
        with self._lock:
            return next((u for u in self.users.values() if u.name == name), None)

    def get_user(self, user_id: str) -> User | None:
        return self.users.get(user_id)

    def list_users(self) -> list[User]:
        with self._lock:
            return sorted(self.users.values(), key=lambda u: u.name)

    def set_password(self, user_id: str, password_hash: str) -> None:
        with self._lock:
            if user_id in self.users:
                self.users[user_id] = replace(self.users[user_id], password_hash=password_hash)

    def set_disabled(self, user_id: str, disabled: bool) -> None:
        with self._lock:
            if user_id in self.users:
                self.users[user_id] = replace(self.users[user_id], disabled=disabled)

    # -- clients --------------------------------------------------------------------------
    def save_client(self, client: Client) -> None:
        with self._lock:
            self.clients[client.client_id] = client

    def find_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def list_clients(self) -> list[Client]:
        with self._lock:
            return sorted(self.clients.values(), key=lambda c: c.created_at)

    # -- grants ---------------------------------------------------------------------------
    def create_grant(self, grant: Grant) -> None:
        with self._lock:
            if grant.id in self.grants:
                raise StoreConflict("grant id taken", code="portal.store.conflict")
            self.grants[grant.id] = grant

    def get_grant(self, grant_id: str) -> Grant | None:
        return self.grants.get(grant_id)

    def list_grants(self, *, user_id: str | None = None, active_only: bool = True) -> list[Grant]:
        with self._lock:
            out = [
                g for g in self.grants.values()
                if (user_id is None or g.user_id == user_id) and (not active_only or g.revoked_at is None)
            ]  # fmt: skip
        return sorted(out, key=lambda g: g.created_at)

    def revoke_grant(self, grant_id: str, at: float) -> bool:
        with self._lock:
            g = self.grants.get(grant_id)
            for h, tok in list(self.tokens.items()):
                if tok.grant_id == grant_id and tok.revoked_at is None:
                    self.tokens[h] = replace(tok, revoked_at=at)
            for h, code in list(self.codes.items()):
                if code.grant_id == grant_id and code.used_at is None:
                    self.codes[h] = replace(code, used_at=at)
            if g is None or g.revoked_at is not None:
                return False
            self.grants[grant_id] = replace(g, revoked_at=at)
            return True

    # -- codes ----------------------------------------------------------------------------
    def save_code(self, code: AuthCode) -> None:
        with self._lock:
            self.codes[code.hash] = code

    def find_code(self, code_hash: str) -> AuthCode | None:
        return self.codes.get(code_hash)

    def take_code(self, code_hash: str, at: float) -> bool:
        with self._lock:
            code = self.codes.get(code_hash)
            if code is None or code.used_at is not None:
                return False
            self.codes[code_hash] = replace(code, used_at=at)
            return True

    # -- tokens ---------------------------------------------------------------------------
    def save_tokens(self, *tokens: TokenRecord) -> None:
        with self._lock:
            for tok in tokens:
                if tok.hash in self.tokens:
                    raise StoreConflict("token hash taken", code="portal.store.conflict")
            for tok in tokens:
                self.tokens[tok.hash] = tok

    def find_token(self, token_hash: str) -> TokenView | None:
        with self._lock:
            tok = self.tokens.get(token_hash)
            if tok is None or tok.grant_id not in self.grants:
                return None
            return TokenView(tok, grant_revoked=self.grants[tok.grant_id].revoked_at is not None)

    def rotate_refresh(self, old_hash: str, new_tokens: tuple[TokenRecord, ...], at: float) -> bool:
        with self._lock:
            old = self.tokens.get(old_hash)
            grant = self.grants.get(old.grant_id) if old is not None else None
            if (
                old is None or grant is None or old.kind != "refresh" or old.used_at is not None
                or old.revoked_at is not None or grant.revoked_at is not None
            ):  # fmt: skip
                return False
            self.tokens[old_hash] = replace(old, used_at=at)
            for tok in new_tokens:
                self.tokens[tok.hash] = tok
            return True

    def revoke_token(self, token_hash: str, at: float) -> None:
        with self._lock:
            tok = self.tokens.get(token_hash)
            if tok is not None and tok.revoked_at is None:
                self.tokens[token_hash] = replace(tok, revoked_at=at)

    def list_tokens(self, *, active_at: float | None = None) -> list[TokenRecord]:
        with self._lock:
            out = list(self.tokens.values())
            if active_at is not None:
                out = [
                    tok for tok in out
                    if TokenView(tok, self.grants[tok.grant_id].revoked_at is not None).usable(active_at)
                ]  # fmt: skip
        return sorted(out, key=lambda tok: tok.created_at)

    # -- sessions, rate events, secrets ---------------------------------------------------
    def create_session(self, session_hash: str, user_id: str, expires_at: float) -> None:
        with self._lock:
            self.sessions[session_hash] = (user_id, expires_at)

    def find_session(self, session_hash: str, now: float) -> str | None:
        found = self.sessions.get(session_hash)
        return found[0] if found is not None and found[1] > now else None

    def delete_session(self, session_hash: str) -> None:
        with self._lock:
            self.sessions.pop(session_hash, None)

    def end_sessions(self, user_id: str) -> int:
        with self._lock:
            gone = [h for h, (uid, _) in self.sessions.items() if uid == user_id]
            for h in gone:
                del self.sessions[h]
            return len(gone)

    def add_rate_event(self, key: str, at: float) -> None:
        with self._lock:
            self.rate.append((key, at))

    def count_rate_events(self, key: str, since: float) -> int:
        with self._lock:
            return sum(1 for k, at in self.rate if k == key and at >= since)

    def clear_rate_events(self, key: str) -> None:
        with self._lock:
            self.rate = [(k, at) for k, at in self.rate if k != key]

    def get_or_create_secret(self, name: str, value: str) -> str:
        with self._lock:
            return self.secrets.setdefault(name, value)

    # -- audit ----------------------------------------------------------------------------
    def record_audit(self, rows: list[AuditRow]) -> None:
        with self._lock:
            self.audit.extend(replace(r, id=next(self._ids)) for r in rows)

    def list_audit(self, *, since: float | None = None, server: str | None = None, limit: int = 1000) -> list[AuditRow]:
        with self._lock:
            rows = [
                r for r in self.audit
                if (since is None or r.at >= since) and (server is None or r.server == server)
            ]  # fmt: skip
        rows.sort(key=lambda r: (r.at, r.id or 0))
        return rows[-limit:] if limit else []

    # -- housekeeping ---------------------------------------------------------------------
    def purge(
        self, now: float, *, unused_clients_before: float | None = None, audit_before: float | None = None
    ) -> int:
        day_ago = now - RATE_EVENT_MAX_AGE
        with self._lock:

            def size() -> int:
                kept = (self.codes, self.sessions, self.tokens, self.rate, self.clients, self.audit)
                return sum(len(rows) for rows in kept)

            before = size()
            self.codes = {h: c for h, c in self.codes.items() if c.expires_at >= day_ago}
            self.sessions = {h: s for h, s in self.sessions.items() if s[1] >= now}
            self.tokens = {h: tok for h, tok in self.tokens.items() if tok.expires_at >= now}
            self.rate = [(k, at) for k, at in self.rate if at >= day_ago]
            closed = 0
            for gid, grant in list(self.grants.items()):
                if grant.revoked_at is not None or grant.created_at >= day_ago:
                    continue
                live = any(
                    tk.grant_id == gid and tk.revoked_at is None and tk.used_at is None and tk.expires_at > now
                    for tk in self.tokens.values()
                ) or any(
                    cd.grant_id == gid and cd.used_at is None and cd.expires_at > now for cd in self.codes.values()
                )
                if not live:
                    self.grants[gid] = replace(grant, revoked_at=now)
                    closed += 1
            used = {g.client_id for g in self.grants.values()}

            def stale(cl: Client) -> bool:
                if cl.client_id in used:
                    return False
                if cl.kind == "cimd":
                    return cl.created_at < day_ago
                return unused_clients_before is not None and cl.created_at < unused_clients_before

            self.clients = {k: cl for k, cl in self.clients.items() if not stale(cl)}
            if audit_before is not None:
                self.audit = [r for r in self.audit if r.at >= audit_before]
            return before - size() + closed
