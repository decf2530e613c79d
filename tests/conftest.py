"""Shared fixtures. ``pytest_plugins`` is not used here: fixtures only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from upstreams import RunningServer, httpbin_server, kinto_server


@pytest.fixture(scope="session")
def httpbin_url() -> Iterator[str]:
    """Base URL of a real httpbin on 127.0.0.1 (skips when it is not installed)."""
    with httpbin_server() as server:
        yield server.base_url


@pytest.fixture(scope="session")
def kinto() -> Iterator[RunningServer]:
    """A real Kinto (``base_url`` ends in ``/v1``) with an ``admin`` basic-auth account."""
    with kinto_server() as server:
        yield server
