"""End to end over every transport with the official ``mcp`` client: ``codemode serve`` as a subprocess.

stdio, streamable HTTP (stateful and ``--stateless``) and SSE each: initialize, list the two tools, search,
search(detail=...), execute(dry_run=True). Plus DNS-rebinding protection, the loopback default bind, and the
size of ``tools/list`` for the GitHub spec (the whole point of two tools: a small, constant tool surface).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
CODEMODE = str(Path(sys.executable).with_name("codemode"))
PETSTORE = str(ROOT / "specs" / "petstore3-openapi.yaml")
GITHUB_SPEC = Path("/work/shared/specs/github-api.github.com.json")
READY_TIMEOUT = 60.0
CALL_TIMEOUT = 60.0
TOOLS_LIST_MAX_CHARS = 4000  # ≈ 1,000 tokens at chars/4, for any spec size


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HttpServer:
    proc: subprocess.Popen[bytes]
    port: int
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


@contextmanager
def serve_http(*args: str, spec: str = PETSTORE, transport: str = "http") -> Iterator[HttpServer]:
    """``codemode serve SPEC --transport T --port N ARGS``, in its own process group; ready when the port accepts."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="codemode-serve-") as tmp:
        stderr_path = Path(tmp) / "stderr.txt"
        with stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                [CODEMODE, "serve", spec, "--transport", transport, "--port", str(port), *args],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=ROOT, start_new_session=True,
            )  # fmt: skip
        server = HttpServer(proc, port, stderr_path)
        try:
            _wait_ready(server)
            yield server
        finally:
            _kill_group(proc)


def _wait_ready(server: HttpServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"codemode serve exited with {server.proc.returncode} before listening:\n{server.stderr()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"codemode serve did not listen on 127.0.0.1:{server.port} within {READY_TIMEOUT:.0f} s:\n"
                f"{server.stderr()}")  # fmt: skip


@asynccontextmanager
async def connect(transport: str, *, stateless: bool = False) -> AsyncIterator[ClientSession]:
    """An initialized ClientSession to ``codemode serve petstore`` over ``transport``."""
    if transport == "stdio":
        with tempfile.TemporaryFile("w+") as errlog:
            params = StdioServerParameters(command=CODEMODE, args=["serve", PETSTORE], cwd=ROOT)
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                await asyncio.wait_for(session.initialize(), READY_TIMEOUT)
                yield session
        return
    with serve_http(*(["--stateless"] if stateless else []), transport=transport) as server:
        if transport == "sse":
            client = sse_client(f"http://127.0.0.1:{server.port}/sse")
        else:
            client = streamable_http_client(f"http://127.0.0.1:{server.port}/mcp")
        async with client as streams, ClientSession(streams[0], streams[1]) as session:
            await asyncio.wait_for(session.initialize(), READY_TIMEOUT)
            yield session


def _text(result: Any) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


TRANSPORTS = [
    pytest.param("stdio", False, id="stdio"),
    pytest.param("http", False, id="http"),
    pytest.param("http", True, id="http-stateless"),
    pytest.param("sse", False, id="sse"),
]


@pytest.mark.parametrize(("transport", "stateless"), TRANSPORTS)
async def test_two_tools_end_to_end(transport: str, stateless: bool) -> None:
    async with connect(transport, stateless=stateless) as session:
        tools = (await asyncio.wait_for(session.list_tools(), CALL_TIMEOUT)).tools
        assert sorted(t.name for t in tools) == ["execute", "search"]
        by_name = {t.name: t for t in tools}
        assert "query" in by_name["search"].input_schema["properties"]
        assert "code" in by_name["execute"].input_schema["properties"]
        assert by_name["execute"].input_schema.get("required") == ["code"]

        found = await asyncio.wait_for(session.call_tool("search", {"query": "find pets by status"}), CALL_TIMEOUT)
        assert not found.is_error, _text(found)
        assert "GET /pet/findByStatus" in _text(found)

        detail = await asyncio.wait_for(session.call_tool("search", {"detail": "api.pet.add"}), CALL_TIMEOUT)
        assert not detail.is_error, _text(detail)
        assert "POST /pet" in _text(detail)

        code = 'result = api.pet.find_pets_by_status(status="sold")'
        ran = await asyncio.wait_for(session.call_tool("execute", {"code": code, "dry_run": True}), CALL_TIMEOUT)
        assert not ran.is_error, _text(ran)
        payload = json.loads(_text(ran))
        assert "result" in payload
        assert payload["calls"][0]["path"] == "/pet/findByStatus"


INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}  # fmt: skip
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def test_dns_rebinding_rejected_streamable_http() -> None:
    """A POST /mcp whose Host (or Origin) is not loopback is refused with a 4xx before any MCP handling."""
    with serve_http() as server, httpx.Client(timeout=10) as http:
        url = f"http://127.0.0.1:{server.port}/mcp"
        evil_host = http.post(url, json=INIT, headers={**ACCEPT, "Host": "evil.example.com"})
        assert evil_host.status_code == 421, (evil_host.status_code, evil_host.text)
        evil_origin = http.post(url, json=INIT, headers={**ACCEPT, "Origin": "http://evil.example.com"})
        assert evil_origin.status_code == 403, (evil_origin.status_code, evil_origin.text)
        ok = http.post(url, json=INIT, headers={**ACCEPT, "Origin": f"http://localhost:{server.port}"})
        assert ok.status_code == 200, (ok.status_code, ok.text)


def test_dns_rebinding_rejected_sse() -> None:
    with serve_http(transport="sse") as server, httpx.Client(timeout=10) as http:
        url = f"http://127.0.0.1:{server.port}/sse"
        with http.stream("GET", url, headers={"Host": "evil.example.com"}) as evil_host:
            assert evil_host.status_code == 421
        with http.stream("GET", url, headers={"Origin": "http://evil.example.com"}) as evil_origin:
            assert evil_origin.status_code == 403
        with http.stream("GET", url) as ok:
            assert ok.status_code == 200


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) in LISTEN state on ``port``."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":
                found.add(address)
    return found


def test_binds_loopback_by_default() -> None:
    with serve_http() as server:
        assert f"http://127.0.0.1:{server.port}" in server.stderr()
        if Path("/proc/net/tcp").exists():
            assert _listening_addresses(server.port) == {"0100007F"}  # 127.0.0.1 only, nothing on :: or 0.0.0.0


async def _raw_stdio(spec: str, *requests: str) -> list[str]:
    """The raw JSON-RPC lines a client receives over stdio for ``requests`` (raw lines, ids 2, 3, …)."""
    with tempfile.TemporaryFile() as errlog:
        proc = await asyncio.create_subprocess_exec(
            CODEMODE, "serve", spec, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=errlog,
            cwd=ROOT, start_new_session=True, limit=1 << 24,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None

        async def request(line: str) -> None:
            proc.stdin.write((line + "\n").encode())  # type: ignore[union-attr]
            await proc.stdin.drain()  # type: ignore[union-attr]

        async def response(want_id: int) -> str:
            while True:
                try:
                    line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)  # type: ignore[union-attr]
                except TimeoutError:
                    pytest.fail(f"no answer to request {want_id} in {READY_TIMEOUT} s")
                if not line:
                    errlog.seek(0)
                    pytest.fail(f"codemode serve closed stdout:\n{errlog.read().decode(errors='replace')}")
                if json.loads(line).get("id") == want_id:
                    return line.decode().rstrip("\n")

        try:
            await request(json.dumps({
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "raw-stdio", "version": "1"}},
            }))  # fmt: skip
            await response(1)
            await request(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            answers = []
            for n, line in enumerate(requests, start=2):
                await request(line)
                answers.append(await response(n))
            return answers
        finally:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            await proc.wait()


async def _raw_stdio_tools_list(spec: str) -> str:
    """The raw JSON-RPC line a client receives for ``tools/list`` over stdio."""
    (line,) = await _raw_stdio(spec, json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
    return line


async def test_a_lone_surrogate_escape_over_stdio_is_answered() -> None:
    """'\\ud800' is valid JSON (half an emoji) that the SDK's parser refuses: it dropped the whole request
    and the client waited forever. Now it is served with U+FFFD in its place, and the server goes on."""

    def call(n: int, arguments: str) -> str:
        params = f'{{"name":"search","arguments":{arguments}}}'
        return f'{{"jsonrpc":"2.0","id":{n},"method":"tools/call","params":{params}}}'

    lone, pair, detail, after = await _raw_stdio(
        PETSTORE,
        call(2, r'{"query":"find pets by status \ud83d"}'),
        call(3, r'{"query":"find pets by status \ud83d\udc36"}'),  # a valid pair stays an emoji
        call(4, r'{"detail":"\udfff"}'),
        call(5, '{"query":"find pets by status"}'),
    )
    assert "GET /pet/findByStatus" in json.loads(lone)["result"]["content"][0]["text"]
    assert "GET /pet/findByStatus" in json.loads(pair)["result"]["content"][0]["text"]
    text = json.loads(detail)["result"]["content"][0]["text"]
    assert json.loads(detail)["result"]["isError"] and "\ufffd" in text
    assert "GET /pet/findByStatus" in json.loads(after)["result"]["content"][0]["text"]


async def test_tools_list_size_for_the_github_spec() -> None:
    if not GITHUB_SPEC.exists():
        pytest.skip(f"{GITHUB_SPEC} not present")
    line = await _raw_stdio_tools_list(str(GITHUB_SPEC))
    tools = json.loads(line)["result"]["tools"]
    assert sorted(t["name"] for t in tools) == ["execute", "search"]
    assert "operations" in tools[0]["description"]
    assert len(line) <= TOOLS_LIST_MAX_CHARS, f"tools/list is {len(line)} chars (≈{len(line) // 4} tokens)"
