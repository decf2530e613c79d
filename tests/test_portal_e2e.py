"""End to end over real HTTP, as a user's MCP client meets the portal: dynamic registration,
sign-in and consent through the forms, code, token, then ``search`` and ``execute`` through the
official ``mcp`` client against a real httpbin on loopback, in the real wasm isolate; a refresh;
a revocation; and the next call refused. The client's token never reaches the upstream."""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import httpx2
import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from portal_harness import HTTPBIN_SPEC, Flow, running_portal

from codemode._sandbox import WasmSandbox

UPSTREAM_KEY = "upstream-secret-0123456789"


class Bearer(httpx2.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, Any, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def _text(result: Any) -> str:
    return "".join(c.text for c in result.content if hasattr(c, "text"))


@pytest.mark.slow
async def test_register_consent_token_search_execute_refresh_revoke(tmp_path: Path, httpbin_url: str) -> None:
    servers = f"""
[servers.httpbin]
spec = "{HTTPBIN_SPEC}"
base_url = "{httpbin_url}"
headers = {{ X-Upstream-Key = "${{HTTPBIN_KEY}}" }}
"""
    with running_portal(tmp_path, servers, env={"HTTPBIN_KEY": UPSTREAM_KEY}, sandbox=WasmSandbox()) as portal:
        with Flow(portal) as flow:
            flow.register()  # RFC 7591, a public client
            resource = f"{portal.base}/mcp/httpbin"
            code, q = flow.code(resource=resource, scope="httpbin:read", uncheck=())
            assert q["iss"] == portal.base
            tokens = flow.exchange(code, resource=resource).json()
            assert tokens["scope"] == "httpbin:read"
            auth = Bearer(tokens["access_token"])
            async with httpx2.AsyncClient(auth=auth, timeout=120) as http:
                async with streamable_http_client(resource, http_client=http) as streams:
                    async with ClientSession(streams[0], streams[1]) as s:
                        await s.initialize()
                        assert {t.name for t in (await s.list_tools()).tools} == {"search", "execute"}
                        hits = _text(await s.call_tool("search", {"query": "return the request headers"}))
                        assert "GET /headers" in hits
                        posting = _text(await s.call_tool("search", {"query": "post data"}))
                        assert "[not callable: needs scope httpbin:write" in posting
                        ran = await s.call_tool("execute", {
                            "code": "h = api.request_inspection.list_headers()['headers']\n"
                                    "result = {k.lower(): v for k, v in h.items()}"})
                        assert not ran.is_error, _text(ran)
                        echoed = json.loads(_text(ran))["result"]
                        assert "authorization" not in echoed  # the client's token is not sent upstream
                        assert echoed["x-upstream-key"] == "[REDACTED]"  # the portal's own credential is
                        assert tokens["access_token"] not in _text(ran)
                        denied = await s.call_tool("execute", {
                            "code": "try:\n    api.http_methods.create_post()\nexcept PermissionError as e:\n"
                                    "    print('refused:', e)\n"})
                        assert "refused:" in _text(denied) and "httpbin:write" in _text(denied)

                        refreshed = flow.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
                        assert refreshed.status_code == 200, refreshed.text
                        auth.token = refreshed.json()["access_token"]  # the same session goes on
                        code = "result = api.request_inspection.list_user_agent()"
                        ran = await s.call_tool("execute", {"code": code})
                        assert not ran.is_error, _text(ran)

                        revoked = flow.browser.post("/revoke", data={
                            "token": refreshed.json()["refresh_token"], "client_id": flow.client_id})
                        assert revoked.status_code == 200
                        with pytest.raises(Exception):  # noqa: B017 - the transport refuses: 401
                            await s.call_tool("search", {"query": "headers"})
            direct = flow.browser.post(resource, json={}, headers={"Authorization": f"Bearer {auth.token}"})
            assert direct.status_code == 401 and 'error="invalid_token"' in direct.headers["www-authenticate"]
        portal.portal.audit.flush()
        rows = portal.portal.store.list_audit()
        events = [r.event for r in rows]
        for event in ("client_registered", "login", "consent", "token_issued", "token_refreshed", "grant_revoked",
                      "upstream_call"):
            assert event in events, event
        calls = [r for r in rows if r.event == "upstream_call"]
        assert {r.operation for r in calls} == {"request_inspection.list_headers", "request_inspection.list_user_agent"}
        assert all(r.user_id and r.client_id == flow.client_id and r.server == "httpbin" for r in calls)
        dump = json.dumps([r.__dict__ for r in rows])
        assert UPSTREAM_KEY not in dump and tokens["access_token"] not in dump
