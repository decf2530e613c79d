"""The portal's errors: a small hierarchy on top of :class:`codemode.CodemodeError`.

    CodemodeError (engine)
    ├── ConfigError (engine)
    │   └── PortalConfigError     a bad portal.toml or flag (code: portal.config.*)
    └── PortalError               code: portal.*
        ├── StoreError            the database failed (portal.store.*)
        │   └── StoreConflict     a unique name taken (portal.store.conflict)
        └── LoginRefused          bad password, unknown user, rate limited (portal.login.*)

OAuth protocol errors are authlib's ``OAuth2Error`` subclasses (plus :class:`InvalidTargetError`,
RFC 8707); they become RFC 6749 §5.2 JSON bodies or error redirects and never carry internals.
"""

from __future__ import annotations

from authlib.oauth2.base import OAuth2Error

from codemode import CodemodeError, ConfigError

__all__ = ["InvalidTargetError", "LoginRefused", "PortalConfigError", "PortalError", "StoreConflict", "StoreError"]


class PortalError(CodemodeError):
    code = "portal.error"


class PortalConfigError(ConfigError):
    """A bad ``portal.toml`` or option; the message is one line naming the key (and line)."""

    code = "portal.config"


class StoreError(PortalError):
    code = "portal.store"


class StoreConflict(StoreError):
    code = "portal.store.conflict"


class LoginRefused(PortalError):
    """A login that did not succeed. The message never says whether the user exists."""

    code = "portal.login.refused"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class InvalidTargetError(OAuth2Error):  # type: ignore[misc]
    """RFC 8707 §2: the requested resource is invalid, unknown, or not the grant's."""

    error = "invalid_target"
