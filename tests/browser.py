"""Headless Chromium driven by Playwright, for tests of real HTML pages on loopback.

The browser is Debian's ``/usr/bin/chromium`` (``CODEMODE_CHROMIUM`` points elsewhere), launched
with exactly :data:`CHROMIUM_FLAGS` and Playwright's own temporary profile. Playwright's browser
download (``playwright install``) is never used. ``scripts/setup-browser.sh`` installs both.

- :func:`chromium` (sync API) for plain tests; the ``browser`` and ``page`` fixtures use it.
- :func:`async_chromium` (async API) for ``async def`` tests whose server runs on the same loop.

Playwright is imported lazily, so this module (and ``conftest.py``) load without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser as AsyncBrowser
    from playwright.sync_api import Browser

__all__ = ["CHROMIUM_FLAGS", "SKIP_REASON", "async_chromium", "chromium", "chromium_path"]

DEFAULT_CHROMIUM = Path("/usr/bin/chromium")
SKIP_REASON = "{what} is missing: run scripts/setup-browser.sh"
# The flags that work on these machines (FACTS §7). The background-networking ones keep Chromium
# from trying to reach its services, which the closed network refuses many at a time.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
LAUNCH_TIMEOUT_MS = 60_000


def chromium_path() -> str:
    """Path of the Chromium binary; skips the test when it or Playwright is missing."""
    path = Path(os.environ.get("CODEMODE_CHROMIUM") or DEFAULT_CHROMIUM)
    if not os.access(path, os.X_OK):
        pytest.skip(SKIP_REASON.format(what=path))
    pytest.importorskip("playwright", reason=SKIP_REASON.format(what="Playwright for Python"))
    return str(path)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium (sync API), closed with its driver on exit."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable, args=list(CHROMIUM_FLAGS), headless=True, timeout=LAUNCH_TIMEOUT_MS
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.asynccontextmanager
async def async_chromium() -> AsyncIterator[AsyncBrowser]:
    """A headless Chromium (async API), closed with its driver on exit."""
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, args=list(CHROMIUM_FLAGS), headless=True, timeout=LAUNCH_TIMEOUT_MS
        )
        try:
            yield browser
        finally:
            await browser.close()
