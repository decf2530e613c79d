"""Secrets the portal must be able to read back (users' upstream API keys and OAuth tokens),
sealed at rest with AES-256-GCM (``cryptography``).

A sealed value is ``cmk1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>``. The associated data
binds it to its key id and to a *context* (what it is and whose: ``upstream:<user>:<server>:secret``),
so a ciphertext copied into another user's row, or into another field, does not open.

Keys (32 random bytes, written as 43 base64url characters), first match wins:

1. ``CODEMODE_PORTAL_CREDENTIAL_KEYS``: one or more keys separated by commas;
2. the key file ``<data_dir>/credential-keys``: one key per line (``#`` comments), created on first
   start with mode 0600 and refused if other users may read it.

The first key seals; every listed key opens (that is how a key is rotated: see ``docs/portal.md``
and ``codemode portal credentials rotate-key``). A malformed key stops the portal with an error
that names where the key came from, never the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from codemode._paths import atomic_write

from ._errors import PortalConfigError, PortalError

__all__ = [
    "ENV_KEYS",
    "KEY_FILE",
    "CredentialKeyError",
    "SealError",
    "SecretBox",
    "drop_old_keys",
    "generate_key",
    "load_box",
    "parse_key",
    "rotate_key_file",
]

ENV_KEYS = "CODEMODE_PORTAL_CREDENTIAL_KEYS"
KEY_FILE = "credential-keys"
KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = "cmk1"
MAX_PLAINTEXT = 64_000  # an API key or token; anything bigger is not a credential
_B64URL = re.compile(r"[A-Za-z0-9_-]{43}=?")
_TO_STD = str.maketrans("-_", "+/")


class CredentialKeyError(PortalConfigError):
    """The credential key is missing, malformed or unsafe; the portal does not start."""

    code = "portal.config.credential_key"


class SealError(PortalError):
    """A sealed value does not open: changed, moved to another row, or sealed under an unknown key."""

    code = "portal.credentials.unreadable"


def generate_key() -> str:
    """A fresh key, as written in the environment or the key file."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=").decode("ascii")


def parse_key(text: str, where: str) -> bytes:
    """The 32 bytes of one written key; ``where`` names its source in the error (never the key)."""
    value = text.strip()
    raw = b""
    if _B64URL.fullmatch(value):
        try:
            raw = base64.b64decode(value.translate(_TO_STD) + "=" * (-len(value) % 4), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) != KEY_BYTES:
        raise CredentialKeyError(
            f"{where}: not a credential key (expected {KEY_BYTES} random bytes as 43 base64url characters; "
            "make one with `codemode portal credentials new-key`).",
        )
    return raw


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"codemode-portal credential key\x00" + key).hexdigest()[:8]


@dataclass(frozen=True)
class _Key:
    id: str
    aead: AESGCM


class SecretBox:
    """Seal and open short secrets. ``keys[0]`` seals; all of them open."""

    def __init__(self, keys: Sequence[bytes], *, source: str = "") -> None:
        if not keys:
            raise CredentialKeyError("no credential key given.")
        seen: dict[str, _Key] = {}
        for key in keys:
            if len(key) != KEY_BYTES:
                raise CredentialKeyError(f"a credential key has {KEY_BYTES} bytes, not {len(key)}.")
            kid = _key_id(key)
            seen.setdefault(kid, _Key(kid, AESGCM(key)))
        self._keys = seen
        self.current = _key_id(keys[0])
        self.source = source

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def __repr__(self) -> str:
        return f"<SecretBox current={self.current} keys={len(self._keys)} from {self.source or '?'}>"

    @staticmethod
    def _aad(kid: str, context: str) -> bytes:
        return f"{VERSION}\x00{kid}\x00{context}".encode("utf-8", "surrogatepass")

    def seal(self, plaintext: str, *, context: str) -> str:
        data = plaintext.encode("utf-8", "surrogatepass")
        if len(data) > MAX_PLAINTEXT:
            raise PortalError(f"a credential is at most {MAX_PLAINTEXT} bytes.", code="portal.credentials.too_long")
        key = self._keys[self.current]
        nonce = secrets.token_bytes(NONCE_BYTES)
        body = nonce + key.aead.encrypt(nonce, data, self._aad(key.id, context))
        return f"{VERSION}.{key.id}.{base64.urlsafe_b64encode(body).rstrip(b'=').decode('ascii')}"

    def key_of(self, sealed: str) -> str | None:
        """The key id a value was sealed under (None if it is not a sealed value)."""
        parts = sealed.split(".")
        return parts[1] if len(parts) == 3 and parts[0] == VERSION else None

    def open(self, sealed: str, *, context: str) -> str:
        parts = sealed.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise SealError("a stored credential is not in the sealed format.")
        kid, text = parts[1], parts[2]
        key = self._keys.get(kid)
        if key is None:
            raise SealError(
                f"a stored credential was sealed under key {kid}, which is not among the configured keys "
                f"({', '.join(self._keys)}); add the old key back (after the new one) to read it."
            )
        try:
            body = base64.b64decode(text.translate(_TO_STD) + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SealError("a stored credential is damaged (not base64).") from None
        if len(body) < NONCE_BYTES + 16:
            raise SealError("a stored credential is damaged (too short).")
        try:
            data = key.aead.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], self._aad(kid, context))
        except InvalidTag:
            raise SealError("a stored credential does not open: it was changed or belongs to another row.") from None
        return data.decode("utf-8", "surrogatepass")

    def reseal(self, sealed: str, *, context: str) -> str | None:
        """The value sealed under the current key, or None when it already is."""
        if self.key_of(sealed) == self.current:
            return None
        return self.seal(self.open(sealed, context=context), context=context)


def _read_key_file(path: Path) -> list[bytes]:
    try:
        info = path.stat()
    except OSError as exc:
        raise CredentialKeyError(f"{path}: cannot read the credential key file ({exc.strerror}).") from None
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialKeyError(
            f"{path}: the credential key file may be read by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run `chmod 600 {path}`."
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialKeyError(f"{path}: cannot read the credential key file ({type(exc).__name__}).") from None
    keys: list[bytes] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if line:
            keys.append(parse_key(line, f"{path}:{n}"))
    if not keys:
        raise CredentialKeyError(f"{path}: the credential key file holds no key.")
    return keys


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 (fails if it exists: two replicas never overwrite each other)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)


KEY_FILE_HEADER = (
    "# codemode portal: keys sealing users' upstream credentials (AES-256-GCM).\n"
    "# The first key seals; every key here opens. Keep this file secret (mode 0600) and backed up:\n"
    "# without it, stored credentials cannot be read. Rotate with `codemode portal credentials rotate-key`.\n"
)


def load_box(data_dir: Path, env: Mapping[str, str], *, create: bool = True) -> SecretBox:
    """The box from ``CODEMODE_PORTAL_CREDENTIAL_KEYS``, else from the key file (created if ``create``)."""
    if ENV_KEYS in env:
        words = [w for w in env[ENV_KEYS].split(",") if w.strip()]
        if not words:
            raise CredentialKeyError(f"{ENV_KEYS} is set but holds no key.")
        keys = [parse_key(w, f"{ENV_KEYS} (key {i})") for i, w in enumerate(words, start=1)]
        return SecretBox(keys, source=ENV_KEYS)
    path = data_dir / KEY_FILE
    if not path.exists():
        if not create:
            raise CredentialKeyError(f"{path}: no credential key file (the portal creates it on first start).")
        path.parent.mkdir(parents=True, exist_ok=True)
        _publish_new(path, KEY_FILE_HEADER + generate_key() + "\n")
    return SecretBox(_read_key_file(path), source=str(path))


def _publish_new(path: Path, text: str) -> None:
    """Create ``path`` complete or not at all: written aside, then hard-linked into place (which fails
    when it exists). Two processes starting together both end up reading the one winner's key."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    _write_new(tmp, text)
    try:
        os.link(tmp, path)
    except FileExistsError:  # another process published first: use theirs
        pass
    finally:
        tmp.unlink()


def rotate_key_file(data_dir: Path, *, keep_old: bool = True) -> tuple[str, list[str]]:
    """Put a new key first in the key file (the old ones after it, unless ``keep_old`` is false).

    Returns (new key id, ids of the keys kept after it). The file is replaced atomically, mode 0600.
    """
    path = data_dir / KEY_FILE
    old = _read_key_file(path)
    new = generate_key()
    kept = old if keep_old else []
    lines = [new, *(base64.urlsafe_b64encode(k).rstrip(b"=").decode("ascii") for k in kept)]
    atomic_write(path, (KEY_FILE_HEADER + "\n".join(lines) + "\n").encode("ascii"), fsync=True)  # mode 0600
    return _key_id(parse_key(new, "new key")), [_key_id(k) for k in kept]


def drop_old_keys(data_dir: Path) -> list[str]:
    """Keep only the first key of the key file; returns the ids removed."""
    path = data_dir / KEY_FILE
    keys = _read_key_file(path)
    current = base64.urlsafe_b64encode(keys[0]).rstrip(b"=").decode("ascii")
    atomic_write(path, (KEY_FILE_HEADER + current + "\n").encode("ascii"), fsync=True)  # mode 0600
    return [_key_id(k) for k in keys[1:]]
