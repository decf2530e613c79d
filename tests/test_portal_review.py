"""An independent adversarial review of the portal: what an attacker or a confused user tried
beyond the black-box authorization suite, over real HTTP against running portals. Each case that
broke something is named for what it broke; the fix landed with it.

Themes: secrets (logs, public pages), cross-user and cross-server isolation, sessions and
operators' account controls, CORS for browser-based MCP clients, operational abuse.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from portal_harness import PETSTORE, RunningPortal, running_portal

from codemode import Caller, load_spec
from codemode._sandbox import LocalSandbox
from codemode._server import CodemodeServer
from codemode._settings import ServerSettings
from codemode._upstream import HttpxUpstream, UpstreamRequest, UpstreamSettings

QUERY_KEY_SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "Echo", "version": "1"},
    "components": {"securitySchemes": {"key": {"type": "apiKey", "in": "query", "name": "api_key"}}},
    "security": [{"key": []}],
    "paths": {
        "/anything/{what}": {
            "get": {
                "operationId": "echo",
                "parameters": [{"name": "what", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {}}}}},
            }
        }
    },
}


def write_spec(tmp: Path, spec: dict[str, Any] = QUERY_KEY_SPEC) -> Path:
    path = tmp / "echo.json"
    path.write_text(json.dumps(spec))
    return path


class QueryKey:
    """A per-user credential as the portal builds it from a pasted key: an API key in the query,
    read (unsealed) on the first ``apply``, so its secret is known only from then on."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.loaded = False

    async def apply(self, request: UpstreamRequest) -> UpstreamRequest:
        self.loaded = True
        return dataclasses.replace(request, params=[*request.params, ("api_key", self.key)])

    def invalidate_tokens(self, request: UpstreamRequest) -> bool:
        return False

    def secrets(self) -> set[str]:
        return {self.key} if self.loaded else set()


# -- secrets -------------------------------------------------------------------------------


async def test_a_callers_own_key_is_scrubbed_from_debug_logs(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """``codemode --debug portal``: httpx logged ``GET …?api_key=<the user's pasted key>`` in clear.
    The server's shared key was scrubbed (the process-wide filter knows it); a user's own key was
    not: the execution's log scrubber is built before the first call, when the portal's credential
    source has not read the key yet."""
    spec = load_spec(str(write_spec(tmp_path)))
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    up = UpstreamSettings(base_url="https://echo.test")
    upstream = HttpxUpstream(up, transport=httpx.MockTransport(handler))
    key = "alice-own-key-0123456789"
    caller = Caller(subject="alice", credentials=QueryKey(key))
    server = CodemodeServer(spec, ServerSettings(upstream=up), sandbox=LocalSandbox(), upstream=upstream, env={},
                            access=lambda: caller)  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        async with Client(server.mcp) as client:
            out = await client.call_tool("execute", {"code": "result = api.call('echo', what='x')"})
    assert not out.is_error, out
    assert seen and f"api_key={key}" in str(seen[0].url)  # the key really went out
    assert "HTTP Request: GET https://echo.test/anything/x?api_key=[REDACTED]" in caplog.text, caplog.text
    assert key not in caplog.text


SPEC_PASSWORD, SPEC_TOKEN = "hunter2-spec-password", "spec-token-0123456789"
SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"

[servers.other]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"

[servers.private]
spec = "https://reader:{SPEC_PASSWORD}@127.0.0.1:1/openapi.json?token={SPEC_TOKEN}"
base_url = "http://127.0.0.1:9/api/v3"
"""


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    with running_portal(tmp_path_factory.mktemp("review"), SERVERS, portal="registrations_per_ip_hour = 10000") as p:
        yield p


def test_a_spec_urls_credentials_never_reach_healthz_the_index_or_the_banner(portal: RunningPortal) -> None:
    """A private spec fetched with credentials in its URL: when the fetch failed, ``/healthz`` (public,
    unauthenticated) and the index page showed the whole URL, password and token included."""
    with portal.http() as http:
        health = http.get("/healthz")
        index = http.get("/")
    problem = health.json()["servers"]["private"]
    assert problem["ok"] is False and "cannot fetch the spec from https://reader:***@127.0.0.1:1" in problem["error"]
    assert "token=***" in problem["error"]
    for text in (health.text, index.text, portal.portal.banner()):
        assert SPEC_PASSWORD not in text and SPEC_TOKEN not in text
