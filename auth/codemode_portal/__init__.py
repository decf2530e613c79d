"""codemode-portal: many codemode servers on one host behind one OAuth 2.1 authorization server.

Each configured server is its own protected resource (``/mcp/<name>``, ``/sse/<name>``); tokens
are bound to one server (RFC 8707) and scoped per operation. Imports point one way: the portal
uses the engine (``codemode``), never the reverse. See ``docs/portal.md``.

The names below are imported on first use, so that ``codemode connect`` (``._connect``, which
needs only the engine's own dependencies) works without the ``portal`` extra (SQLAlchemy, argon2…).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._config import PortalConfig, PortalSettings, ScopeEntry, ServerEntry, load_portal_config
    from ._errors import InvalidTargetError, LoginRefused, PortalConfigError, PortalError, StoreConflict, StoreError
    from ._store import AsyncStore, MemoryStore, SqlStore, Store, open_store
    from ._users import Users

_WHERE = {
    "PortalConfig": "._config", "PortalSettings": "._config", "ScopeEntry": "._config", "ServerEntry": "._config",
    "load_portal_config": "._config",
    "InvalidTargetError": "._errors", "LoginRefused": "._errors", "PortalConfigError": "._errors",
    "PortalError": "._errors", "StoreConflict": "._errors", "StoreError": "._errors",
    "AsyncStore": "._store", "MemoryStore": "._store", "SqlStore": "._store", "Store": "._store",
    "open_store": "._store",
    "Users": "._users",
}  # fmt: skip

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
