"""Where codemode keeps its caches (the IR, the compiled isolate, search embeddings)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$CODEMODE_CACHE_DIR``, else ``$XDG_CACHE_HOME/codemode``, else ``~/.cache/codemode``."""
    env = os.environ.get("CODEMODE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "codemode"
