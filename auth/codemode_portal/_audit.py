"""The audit log: OAuth events and every upstream call made by ``execute``.

Recording never blocks and never touches the database on the caller's thread: rows queue in
memory and a background task writes them in batches (``run``), or ``flush()`` does it now.
A row holds names, ids and statuses, never a secret, a token or a payload (no URLs with values,
no bodies).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import anyio

from codemode import AuditEvent, AuditHook

from ._store import AuditRow, Store

__all__ = ["EVENTS", "AuditLog"]

log = logging.getLogger("codemode.portal.audit")

EVENTS = (
    "login", "login_failed", "logout", "client_registered", "consent", "consent_denied", "grant_revoked",
    "token_issued", "token_refreshed", "token_revoked", "replay", "upstream_call",
    # each user's own upstream credentials, and delegated (OpenID Connect) sign-in
    "upstream_key_saved", "upstream_linked", "upstream_link_failed", "upstream_unlinked", "upstream_refreshed",
    "upstream_refresh_failed", "user_created",
    # operators' account controls
    "password_changed", "user_disabled", "user_enabled",
)  # fmt: skip
DETAIL_MAX = 500


class AuditLog:
    def __init__(self, store: Store, *, max_pending: int = 50_000, batch: int = 500) -> None:
        self.store = store
        self.max_pending = max_pending
        self.batch = batch
        self._pending: deque[AuditRow] = deque()
        self._lock = threading.Lock()
        self.dropped = 0

    def record(
        self,
        event: str,
        *,
        user_id: str | None = None,
        client_id: str | None = None,
        server: str | None = None,
        operation: str | None = None,
        status: str | None = None,
        detail: str | None = None,
    ) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        row = AuditRow(
            at=time.time(), event=event, user_id=user_id, client_id=client_id, server=server,
            operation=operation[:300] if operation else None, status=status[:64] if status else None,
            detail=detail[:DETAIL_MAX] if detail else None,
        )  # fmt: skip
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self.dropped += 1
                if self.dropped in (1, 100, 10_000) or self.dropped % 100_000 == 0:
                    log.warning("audit queue full (%d rows): %d rows dropped so far", self.max_pending, self.dropped)
                return
            self._pending.append(row)

    def hook_for(self, server: str) -> AuditHook:
        """An engine ``AuditHook`` for one server: one ``upstream_call`` row per upstream request."""

        def hook(ev: AuditEvent) -> None:
            status = str(ev.status) if ev.status is not None else (ev.error or "error")
            detail = f"{ev.method.upper()} {ev.elapsed_ms:.0f} ms, {ev.attempts} attempt(s)"
            self.record("upstream_call", user_id=ev.subject, client_id=ev.client_id, server=server,
                        operation=ev.operation, status=status, detail=detail)  # fmt: skip

        return hook

    def flush(self) -> int:
        """Write every queued row now (synchronous: call it off the event loop). Returns rows written."""
        written = 0
        while True:
            with self._lock:
                rows = [self._pending.popleft() for _ in range(min(self.batch, len(self._pending)))]
            if not rows:
                return written
            try:
                self.store.record_audit(rows)
            except Exception:  # the store failed: put the rows back and let the next flush retry
                with self._lock:
                    self._pending.extendleft(reversed(rows))
                raise
            written += len(rows)

    async def run(self, interval: float = 1.0) -> None:
        """Flush every ``interval`` seconds until cancelled (then once more)."""
        try:
            while True:
                await anyio.sleep(interval)
                try:
                    await anyio.to_thread.run_sync(self.flush)
                except Exception:
                    log.exception("writing audit rows failed; will retry")
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(self.flush)
                except Exception:
                    log.exception("writing the last audit rows failed")
