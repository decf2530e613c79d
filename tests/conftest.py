"""Shared fixtures. ``pytest_plugins`` is not used here: fixtures only."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from browser import chromium
from idp import OAuthProvider, oauth_provider
from postgres import PostgresCluster, postgres_cluster
from upstreams import RunningServer, httpbin_server, kinto_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


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


@pytest.fixture(scope="session")
def idp() -> Iterator[OAuthProvider]:
    """The test OAuth 2.0 + OpenID Connect provider on 127.0.0.1, users ``alice`` and ``bob``.

    Shared by the session: register a client per test (``idp.register_client([callback])``).
    """
    with oauth_provider(users=("alice", "bob")) as provider:
        yield provider


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1 for the whole session (skips when not installed)."""
    pytest.importorskip("psycopg", reason="psycopg 3 not installed: run scripts/setup-postgres.sh")
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresCluster) -> str:
    """SQLAlchemy URL ``postgresql+psycopg://postgres@127.0.0.1:PORT/postgres`` of the session's cluster."""
    return postgres.url


@pytest.fixture
def postgres_db_url(postgres: PostgresCluster) -> Iterator[str]:
    """SQLAlchemy URL of a new, empty database in the session's cluster, dropped after the test."""
    with postgres.database() as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium through Playwright's sync API (skips when not installed).

    Per test on purpose: while Playwright's sync API is open it marks its own event loop as the
    thread's running loop, which breaks every ``async def`` test run meanwhile. Async tests use
    ``browser.async_chromium()`` instead.
    """
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (own cookies and storage), closed after the test."""
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Under ``make test`` (``CODEMODE_REQUIRE_ALL=1``) a skipped test fails: everything it needs is installed."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("CODEMODE_REQUIRE_ALL") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but CODEMODE_REQUIRE_ALL=1 (make test) allows no skip: {reason}"


_HEAVY_FIXTURES = {
    "sandbox": "isolate", "wasm": "isolate", "httpbin_url": "upstream_server", "kinto": "upstream_server",
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by what they start: ``isolate`` (the real wasm sandbox), ``upstream_server`` (a real
    loopback API). ``make mutants`` runs the others (``-m "not isolate and not upstream_server"``)."""
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & set(_HEAVY_FIXTURES):
            item.add_marker(getattr(pytest.mark, _HEAVY_FIXTURES[fixture]))
