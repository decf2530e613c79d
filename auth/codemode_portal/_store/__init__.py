"""The storage seam: one :class:`Store` protocol, implemented on SQLAlchemy Core (``SqlStore``,
SQLite or PostgreSQL) and in memory (``MemoryStore``). ``AsyncStore`` calls it off the event loop."""

from __future__ import annotations

from ._async import AsyncStore
from ._memory import MemoryStore
from ._sql import SqlStore
from ._types import AuditRow, AuthCode, Client, Grant, Store, TokenKind, TokenRecord, TokenView, User
from ._upstream_types import ExternalIdentity, PendingFlow, UpstreamCredential, UpstreamStore

__all__ = [
    "AsyncStore",
    "AuditRow",
    "AuthCode",
    "Client",
    "ExternalIdentity",
    "Grant",
    "MemoryStore",
    "PendingFlow",
    "SqlStore",
    "Store",
    "TokenKind",
    "TokenRecord",
    "TokenView",
    "UpstreamCredential",
    "UpstreamStore",
    "User",
    "open_store",
]


def open_store(url: str) -> Store:
    """``memory:`` for a throwaway in-memory store, else a SQLAlchemy URL (migrated on open)."""
    if url == "memory:":
        return MemoryStore()
    return SqlStore(url)
