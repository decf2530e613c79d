"""Hostile programs sent through the MCP execute tool are contained, and the same server keeps serving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from codemode import load_spec
from codemode._sandbox import SandboxLimits, WasmSandbox
from codemode._server import CodemodeServer
from codemode._settings import ExecuteSettings, ServerSettings

SPEC = Path(__file__).resolve().parents[1] / "specs" / "petstore3-openapi.yaml"

HOSTILE = [
    ("while True:\n    pass", "timeout_seconds=2.0"),
    ("x = 'a' * (10 ** 9)", "MemoryError"),
    ("def f(n):\n    return f(n + 1)\nf(0)", "RecursionError"),
    ("for i in range(100000):\n    print('flood' * 100)", None),  # truncated, not an error
    ("for i in range(10000):\n    api.nope.nothing()", "AttributeError"),
    ("api.call('GET /pet/{petId}', petId=1, extra='x' * 3_000_000)", "max_call_bytes"),
    ("import socket", "import of 'socket' is not allowed"),
    ("().__class__.__bases__[0].__subclasses__()", "dunder"),
    ("raise SystemExit(3)", "SystemExit"),
]


@pytest.fixture(scope="module")
def server() -> CodemodeServer:
    sandbox = WasmSandbox()
    sandbox.prepare()
    settings = ServerSettings(execute=ExecuteSettings(limits=SandboxLimits(timeout_seconds=2.0, memory_mb=128)))
    return CodemodeServer(load_spec(str(SPEC)), settings, sandbox=sandbox)


@pytest.mark.parametrize(("code", "needle"), HOSTILE, ids=[c.split("\n")[0][:30] for c, _ in HOSTILE])
async def test_hostile_code_is_contained_and_the_server_keeps_serving(
    server: CodemodeServer, code: str, needle: str | None
) -> None:
    async with Client(server.mcp) as client:
        hostile = await client.call_tool("execute", {"code": code, "dry_run": True})
        text = hostile.content[0].text  # type: ignore[union-attr]
        if needle is None:
            assert "max_output_bytes" in text
        else:
            assert hostile.is_error and needle in text, text
        after = await client.call_tool("execute", {"code": "result = api.pet.get_by_id(1)['name']", "dry_run": True})
        assert not after.is_error and json.loads(after.content[0].text)["result"] == "doggie"  # type: ignore[union-attr]
        found = await client.call_tool("search", {"query": "find pets by status"})
        assert "GET /pet/findByStatus" in found.content[0].text  # type: ignore[union-attr]
