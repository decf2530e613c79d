"""End to end: the MCP server with the real wasm isolate against real upstreams on 127.0.0.1.

Kinto (a stateful JSON store, served with its own Swagger spec) for create/read/update/delete,
and httpbin (which echoes requests) to prove that credentials never reach the guest.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from codemode import load_spec
from codemode._sandbox import WasmSandbox
from codemode._server import CodemodeServer
from codemode._settings import ExecuteSettings, ServerSettings
from codemode._upstream import UpstreamSettings

SPECS = Path(__file__).resolve().parents[1] / "specs"


@pytest.fixture(scope="session")
def wasm() -> WasmSandbox:
    sandbox = WasmSandbox()
    sandbox.prepare()
    return sandbox


async def call(client: Client, tool: str, args: dict[str, Any]) -> tuple[str, bool]:
    result = await client.call_tool(tool, args)
    return result.content[0].text, bool(result.is_error)  # type: ignore[union-attr]


@pytest.fixture
def kinto_server(kinto: Any, wasm: WasmSandbox) -> CodemodeServer:
    token = base64.b64encode(f"{kinto.info.username}:{kinto.info.password}".encode()).decode()
    settings = ServerSettings(
        upstream=UpstreamSettings(base_url=kinto.base_url, headers={"Authorization": f"Basic {token}"})
    )
    return CodemodeServer(load_spec(str(SPECS / "kinto-26.5.0-served-__api__.json")), settings, sandbox=wasm)


async def run_code(server: CodemodeServer, code: str) -> tuple[str, bool]:
    async with Client(server.mcp) as client:
        return await call(client, "execute", {"code": code})


async def test_kinto_crud_through_execute(kinto_server: CodemodeServer) -> None:
    code = """
api.buckets.create_bucket(data={"id": "shop"})
api.collections.create_collection("shop", data={"id": "orders"})
for i in range(3):
    api.records.create_record("shop", "orders", data={"id": f"o{i}", "total": 10 * i})
api.records.patch_record("shop", "orders", "o1", data={"total": 99})
api.records.delete_record("shop", "orders", "o2")
records = api.records.get("shop", "orders")["data"]
result = sorted((r["id"], r["total"]) for r in records)
print("records:", len(records))
"""
    text, is_error = await run_code(kinto_server, code)
    assert not is_error, text
    out = json.loads(text)
    assert out["result"] == [["o0", 0], ["o1", 99]]
    assert out["stdout"] == "records: 2\n"
    assert [c["status"] for c in out["calls"]] == [201, 201, 201, 201, 201, 200, 200, 200]
    assert out["calls"][0]["path"] == "/buckets"


async def test_kinto_upstream_error_is_catchable(kinto_server: CodemodeServer) -> None:
    code = """
try:
    api.buckets.get_bucket("does-not-exist")
except ApiError as e:
    result = {"status": e.status, "errno": e.body.get("errno"), "op": e.operation}
"""
    text, is_error = await run_code(kinto_server, code)
    assert not is_error, text
    result = json.loads(text)["result"]
    assert result["status"] in (403, 404) and result["op"] == "buckets.get_bucket"
    assert isinstance(result["errno"], int)


async def test_uncaught_api_error_is_a_tool_error_with_line(kinto_server: CodemodeServer) -> None:
    text, is_error = await run_code(kinto_server, "x = 1\napi.buckets.get_bucket('nope')")
    assert is_error
    out = json.loads(text)
    assert out["error"].startswith("ApiError: GET /buckets/{id} failed with HTTP")
    assert "(line 2)" in out["error"]


SECRET = "sk-live-0123456789abcdef-SECRET"


async def test_credentials_never_reach_the_guest(httpbin_url: str, wasm: WasmSandbox) -> None:
    settings = ServerSettings(
        upstream=UpstreamSettings(
            base_url=httpbin_url, headers={"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET}
        ),
        execute=ExecuteSettings(),
    )
    server = CodemodeServer(load_spec(str(SPECS / "httpbin-0.10.4-served-spec.json")), settings, sandbox=wasm)
    code = """
echo = api.request_inspection.list_headers()
anything = api.anything.create()
print(echo)
result = {"headers": echo, "anything": anything["headers"]}
"""
    async with Client(server.mcp) as client:
        text, is_error = await call(client, "execute", {"code": code})
    assert not is_error, text
    assert SECRET not in text
    assert base64.b64encode(SECRET.encode()).decode() not in text
    out = json.loads(text)
    assert out["result"]["headers"]["headers"]["Authorization"] == "[REDACTED]"
    assert out["result"]["headers"]["headers"]["X-Api-Key"] == "[REDACTED]"
    assert out["result"]["anything"]["Authorization"] == "[REDACTED]"


async def test_basic_auth_scheme_from_env_is_injected(httpbin_url: str, wasm: WasmSandbox, tmp_path: Path) -> None:
    """A basic-auth security scheme (added to httpbin's spec, which has none) is really injected and never seen."""
    raw = json.loads((SPECS / "httpbin-0.10.4-served-spec.json").read_text())
    raw["securityDefinitions"] = {"auth": {"type": "basic"}}
    raw["security"] = [{"auth": []}]
    path = tmp_path / "httpbin-basic.json"
    path.write_text(json.dumps(raw))
    server = CodemodeServer(
        load_spec(str(path)),
        ServerSettings(upstream=UpstreamSettings(base_url=httpbin_url)),
        sandbox=wasm,
        env={"CODEMODE_AUTH": f"user:{SECRET}"},
    )
    text, is_error = await run_code(server, "result = api.call('GET /headers')['headers']")
    assert not is_error, text
    headers = json.loads(text)["result"]
    assert headers["Authorization"] == "[REDACTED]"  # it was sent (httpbin echoed it) and scrubbed
    assert SECRET not in text and base64.b64encode(f"user:{SECRET}".encode()).decode() not in text
