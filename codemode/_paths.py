"""Where codemode keeps its caches (the IR, the compiled isolate, search embeddings), and how it writes them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$CODEMODE_CACHE_DIR``, else ``$XDG_CACHE_HOME/codemode``, else ``~/.cache/codemode``."""
    env = os.environ.get("CODEMODE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "codemode"


def atomic_write(path: Path, data: bytes | Callable[[IO[bytes]], object], *, fsync: bool = False) -> None:
    """Write ``path`` whole or not at all: into a temporary file beside it, renamed into place.

    ``data`` is the bytes, or a function that writes to the open file. On any failure (a full
    disk, a value pickle cannot write, an interrupt) the temporary file is removed and the error
    raised; an existing ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, bytes):
                fh.write(data)
            else:
                data(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
