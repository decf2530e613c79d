"""Where ``codemode connect`` keeps its client registration and tokens: one file per server URL.

The file lives under the user's configuration folder (``$XDG_CONFIG_HOME/codemode/connect`` or
``~/.config/…`` on Linux, ``~/Library/Application Support/codemode/connect`` on macOS,
``%APPDATA%\\codemode\\connect`` on Windows; ``CODEMODE_CONFIG_DIR`` overrides the base). The
folder is made ``0700`` and each file ``0600``, created that way (never widened afterwards), written
to a temporary file and renamed over the old one, so a reader never sees half a file. Files are
opened without following symbolic links and must belong to the current user.

A file that cannot be read as ours (not JSON, another format, another server's URL) is moved
aside (``*.corrupt-<time>``) with a warning, and the bridge signs in again. A file that others can
read is tightened to ``0600``, with a warning that its tokens may have been seen.

Several bridges for the same URL (Claude Desktop and Claude Code, say) share the file. Refresh
tokens rotate, and presenting an already-rotated one revokes the whole grant, so a bridge re-reads
the file before each use (``load``) and changes tokens only under :meth:`TokenFile.lock`, an
inter-process lock (``flock`` on a ``.lock`` file beside it; ``msvcrt`` on Windows).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import ValidationError

from ._errors import ConnectError

__all__ = ["FORMAT", "MAX_FILE_BYTES", "FileLock", "StoredState", "TokenFile", "config_dir", "token_path"]

FORMAT = "codemode-connect/1"
MAX_FILE_BYTES = 256 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
log = logging.getLogger("codemode.connect")


def config_dir(platform: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The user's configuration folder for codemode, the way each OS expects it."""
    platform = platform or sys.platform
    env = os.environ if env is None else env
    if env.get("CODEMODE_CONFIG_DIR"):
        return Path(env["CODEMODE_CONFIG_DIR"])
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform == "darwin":
        return home / "Library" / "Application Support" / "codemode"
    if platform.startswith("win"):
        appdata = env.get("APPDATA")
        return (Path(appdata) if appdata else home / "AppData" / "Roaming") / "codemode"
    xdg = env.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config") / "codemode"


def token_path(server_url: str, base: Path | None = None) -> Path:
    """``<config>/connect/<host>-<hash>.json``: readable, and one file per exact server URL."""
    host = _UNSAFE.sub("_", urlsplit(server_url).netloc)[:60] or "server"
    digest = hashlib.sha256(server_url.encode()).hexdigest()[:16]
    return (base or config_dir()) / "connect" / f"{host}-{digest}.json"


@dataclass(frozen=True)
class StoredState:
    client: OAuthClientInformationFull | None = None
    tokens: OAuthToken | None = None
    expires_at: float | None = None  # epoch seconds of the access token's end, when the portal said


class TokenFile:
    """The state file of one server URL. Synchronous and small; callers hop to a thread."""

    def __init__(self, server_url: str, path: Path) -> None:
        self.server_url = server_url
        self.path = path

    # reading ---------------------------------------------------------------------------------

    def load(self) -> StoredState:
        """What the file holds (empty when there is none). A broken file is moved aside."""
        try:
            raw = self._read()
        except FileNotFoundError:
            return StoredState()
        try:
            return self._parse(raw)
        except (ValueError, ValidationError, TypeError) as exc:
            reason = str(exc).splitlines()[0][:200]
            self._quarantine(reason)
            return StoredState()

    def _read(self) -> bytes:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(self.path, flags)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            if self.path.is_symlink():
                raise ConnectError(
                    f"the token file {self.path} is a symbolic link; codemode connect does not follow links there. "
                    "Remove it and connect again.",
                    code="connect.tokens.symlink",
                ) from None
            raise ConnectError(
                f"cannot read the token file {self.path}: {exc.strerror}", code="connect.tokens.io"
            ) from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConnectError(f"the token file {self.path} is not a regular file", code="connect.tokens.io")
            if hasattr(os, "getuid") and st.st_uid != os.getuid():
                raise ConnectError(
                    f"the token file {self.path} belongs to another user; codemode connect will not use it. "
                    "Remove it and connect again.",
                    code="connect.tokens.owner",
                )
            if os.name != "nt" and st.st_mode & 0o077:
                os.fchmod(fh.fileno(), 0o600)
                log.warning(
                    "the token file %s was readable by other users; it is 0600 now. Its tokens may have been "
                    "read: run `codemode connect %s --logout` to revoke them if in doubt.",
                    self.path, self.server_url,
                )  # fmt: skip
            return fh.read(MAX_FILE_BYTES + 1)

    def _parse(self, raw: bytes) -> StoredState:
        if len(raw) > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("server_url") != self.server_url:
            raise ValueError("it belongs to another server URL")
        client = data.get("client")
        tokens = data.get("tokens")
        expires_at = data.get("expires_at")
        if expires_at is not None and not isinstance(expires_at, int | float):
            raise ValueError("expires_at is not a number")
        return StoredState(
            client=OAuthClientInformationFull.model_validate(client) if client is not None else None,
            tokens=OAuthToken.model_validate(tokens) if tokens is not None else None,
            expires_at=float(expires_at) if expires_at is not None else None,
        )

    def _quarantine(self, reason: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        try:
            os.replace(self.path, aside)
            where = f"moved to {aside}"
        except OSError:
            where = "left in place"
        log.warning(
            "the token file %s could not be read (%s); %s. Signing in again.", self.path, reason, where
        )  # fmt: skip

    # writing ---------------------------------------------------------------------------------

    def save(self, state: StoredState) -> None:
        """Replace the file with ``state`` (atomically; 0600 from the moment it exists)."""
        body: dict[str, Any] = {
            "format": FORMAT,
            "server_url": self.server_url,
            "client": state.client.model_dump(mode="json", exclude_none=True) if state.client else None,
            "tokens": state.tokens.model_dump(mode="json", exclude_none=True) if state.tokens else None,
            "expires_at": state.expires_at,
        }
        payload = json.dumps(body, indent=1).encode()
        self._ensure_dir()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(tmp, flags, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ConnectError(
                f"cannot write the token file {self.path}: {exc.strerror}", code="connect.tokens.io"
            ) from None

    def delete(self) -> bool:
        try:
            os.unlink(self.path)
            return True
        except FileNotFoundError:
            return False

    def _ensure_dir(self) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConnectError(f"cannot create {folder}: {exc.strerror}", code="connect.tokens.io") from None
        if os.name == "nt":
            return
        st = folder.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise ConnectError(
                f"{folder} is not a folder of the current user; codemode connect keeps tokens only in a private "
                "folder.",
                code="connect.tokens.owner",
            )  # fmt: skip
        if st.st_mode & 0o077:
            os.chmod(folder, 0o700)

    # the inter-process lock ------------------------------------------------------------------

    def lock(self) -> FileLock:
        return FileLock(self.path.with_name(self.path.name + ".lock"), ensure_dir=self._ensure_dir)


class FileLock:
    """An inter-process lock on a file (``flock``; ``msvcrt.locking`` on Windows), acquired by
    polling so that waiting stays cancellable. A crashed holder's lock is released by the OS."""

    def __init__(self, path: Path, *, ensure_dir: Callable[[], None] | None = None) -> None:
        self.path = path
        self._ensure_dir = ensure_dir
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    async def acquire(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; False (and a warning) when another holder kept it."""
        if self._fd is not None:
            return True
        if self._ensure_dir is not None:
            self._ensure_dir()
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise ConnectError(
                f"cannot open the lock file {self.path}: {exc.strerror}", code="connect.tokens.io"
            ) from None
        deadline = time.monotonic() + timeout
        try:
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    log.warning("another codemode connect holds %s; going on without it", self.path)
                    os.close(fd)
                    return False
                await anyio.sleep(0.1)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            _unlock(fd)
            os.close(fd)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
