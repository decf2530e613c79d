"""Secrets: random tokens with a readable prefix, their SHA-256 hashes, constant-time comparison.

Only hashes are stored. A token is 256 random bits (``secrets.token_urlsafe(32)``), so a plain
SHA-256 (no salt, no stretching) is enough: nothing can be guessed from a database dump, and the
lookup stays one indexed equality. Passwords are different (low entropy): see ``_users``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = [
    "ACCESS_PREFIX",
    "CLIENT_SECRET_PREFIX",
    "CODE_PREFIX",
    "REFRESH_PREFIX",
    "SESSION_PREFIX",
    "derive",
    "new_id",
    "new_token",
    "same",
    "token_hash",
]

ACCESS_PREFIX = "cmp_at_"
REFRESH_PREFIX = "cmp_rt_"
CODE_PREFIX = "cmp_ac_"
CLIENT_SECRET_PREFIX = "cmp_cs_"  # noqa: S105 - a prefix, not a secret
SESSION_PREFIX = "cmp_ss_"
TOKEN_BYTES = 32


def new_token(prefix: str) -> str:
    """A fresh secret: ``prefix`` + 43 URL-safe characters (256 bits)."""
    return prefix + secrets.token_urlsafe(TOKEN_BYTES)


def new_id() -> str:
    """A random identifier for rows (not a secret)."""
    return secrets.token_hex(12)


def token_hash(token: str) -> str:
    """The stored form of a token: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time equality of two strings."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def derive(key: str, purpose: str, value: str) -> str:
    """HMAC-SHA256 of ``value`` under ``key`` for one ``purpose`` (e.g. CSRF tokens bound to a session)."""
    return hmac.new(key.encode(), f"{purpose}\x00{value}".encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
