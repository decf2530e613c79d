"""codemode-portal: many codemode servers on one host behind one OAuth 2.1 authorization server.

Each configured server is its own protected resource (``/mcp/<name>``, ``/sse/<name>``); tokens
are bound to one server (RFC 8707) and scoped per operation. Imports point one way: the portal
uses the engine (``codemode``), never the reverse. See ``docs/portal.md``.
"""

from __future__ import annotations

from ._config import PortalConfig, PortalSettings, ScopeEntry, ServerEntry, load_portal_config
from ._errors import InvalidTargetError, LoginRefused, PortalConfigError, PortalError, StoreConflict, StoreError
from ._store import AsyncStore, MemoryStore, SqlStore, Store, open_store
from ._users import Users

__all__ = [
    "AsyncStore",
    "InvalidTargetError",
    "LoginRefused",
    "MemoryStore",
    "PortalConfig",
    "PortalConfigError",
    "PortalError",
    "PortalSettings",
    "ScopeEntry",
    "ServerEntry",
    "SqlStore",
    "Store",
    "StoreConflict",
    "StoreError",
    "Users",
    "load_portal_config",
    "open_store",
]
