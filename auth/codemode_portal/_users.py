"""Portal users: argon2id password hashes and login rate limits.

Failed logins are counted in the store (``rate_events``), per user name and per client address,
over a sliding window, so every replica sees the same counts. A refused login never says whether
the user exists, and an unknown name costs the same argon2 verification as a known one.
"""

from __future__ import annotations

import functools
import re
import secrets
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ._config import PortalSettings
from ._crypto import new_id
from ._errors import LoginRefused, PortalError, StoreConflict
from ._store import Grant, Store, User

__all__ = ["MAX_PASSWORD", "MIN_PASSWORD", "USER_NAME", "Users", "hash_password", "verify_password"]

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # argon2 hashes anything, but a megabyte "password" is a denial-of-service vector
_HASHER = PasswordHasher()  # argon2id, library defaults (RFC 9106 low-memory profile)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


@functools.cache
def _dummy_hash() -> str:
    """What an unknown user's password is checked against, so that a miss costs what a hit costs."""
    return _HASHER.hash(secrets.token_urlsafe(16))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class Users:
    """User management and password login, on a (synchronous) store."""

    def __init__(self, store: Store, settings: PortalSettings) -> None:
        self.store = store
        self.settings = settings

    def add(self, name: str, password: str, *, is_admin: bool = False) -> User:
        if not USER_NAME.fullmatch(name):
            raise PortalError(
                f"user name {name!r} is not allowed: 1-64 letters, digits and _.@+- (starting with a letter or digit).",
                code="portal.user.name",
            )
        self._check_password(password)
        user = User(id=new_id(), name=name, password_hash=hash_password(password), created_at=time.time(),
                    is_admin=is_admin)  # fmt: skip
        try:
            self.store.create_user(user)
        except StoreConflict:
            raise PortalError(f"a user named {name!r} already exists.", code="portal.user.exists") from None
        return user

    def set_password(self, name: str, password: str) -> int:
        """Set the password and end every sign-in session of the user (a changed password is often a
        leaked one: whoever signed in with the old one is signed out). Returns the sessions ended."""
        user = self._named(name)
        self._check_password(password)
        self.store.set_password(user.id, hash_password(password))
        return self.store.end_sessions(user.id)

    def set_disabled(self, name: str, disabled: bool, now: float | None = None) -> tuple[User, list[Grant]]:
        """Disable a user: no sign-in (password or OpenID Connect), every session ended, every grant
        revoked with its tokens, so every application loses access at its next request. Enabling
        allows sign-in again; revoked grants stay revoked. Returns the user and the grants revoked."""
        user = self._named(name)
        self.store.set_disabled(user.id, disabled)
        if not disabled:
            return user, []
        self.store.end_sessions(user.id)
        at = time.time() if now is None else now
        revoked = [g for g in self.store.list_grants(user_id=user.id) if self.store.revoke_grant(g.id, at)]
        return user, revoked

    def _named(self, name: str) -> User:
        user = self.store.find_user(name)
        if user is None:
            raise PortalError(f"no user named {name!r}.", code="portal.user.unknown")
        return user

    @staticmethod
    def _check_password(password: str) -> None:
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise PortalError(
                f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters.", code="portal.user.password"
            )

    def ensure_admin(self) -> str | None:
        """On an empty database, create ``admin`` with a random password and return it (shown once)."""
        if self.store.list_users():
            return None
        password = secrets.token_urlsafe(18)
        try:
            self.add("admin", password, is_admin=True)
        except PortalError:  # another replica created it first
            return None
        return password

    def authenticate(self, name: str, password: str, address: str, now: float | None = None) -> User:
        """The user, or ``LoginRefused`` (bad credentials, or too many failures for the name or address)."""
        now = time.time() if now is None else now
        s = self.settings
        since = now - s.login_window_seconds
        keys = (f"login:user:{name.lower()[:100]}", f"login:ip:{address[:100]}")
        limits = (s.login_failures_per_user, s.login_failures_per_ip)
        for key, limit in zip(keys, limits, strict=True):
            if self.store.count_rate_events(key, since) >= limit:
                raise LoginRefused(
                    "Too many failed sign-ins. Try again later.", code="portal.login.limited",
                    retry_after=s.login_window_seconds,
                )  # fmt: skip
        user = self.store.find_user(name) if USER_NAME.fullmatch(name) and len(password) <= MAX_PASSWORD else None
        ok = verify_password(user.password_hash if user else _dummy_hash(), password[:MAX_PASSWORD])
        if user is None or not ok or user.disabled:
            for key in keys:
                self.store.add_rate_event(key, now)
            raise LoginRefused("Wrong user name or password.", code="portal.login.failed")
        self.store.clear_rate_events(keys[0])
        if _HASHER.check_needs_rehash(user.password_hash):
            self.store.set_password(user.id, hash_password(password))
        return user
