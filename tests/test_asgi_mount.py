"""Mounting servers inside another ASGI app (``codemode._asgi``): two servers under their own paths,
over streamable HTTP (stateful and stateless) and SSE, with the official ``mcp`` client. A host
middleware puts the caller in a ContextVar; the server's ``access`` hook reads it inside the tool
handler, per HTTP request (the identity changes between two calls of the same session)."""

from __future__ import annotations

import asyncio
import contextvars
import socket
from collections.abc import AsyncIterator, Generator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from starlette.types import Receive, Scope, Send

from codemode import Caller, Operation, load_spec
from codemode._asgi import MountedServer, mount_http, mount_sse
from codemode._sandbox import LocalSandbox
from codemode._server import CodemodeServer, transport_security
from codemode._settings import ServerSettings

ROOT = Path(__file__).resolve().parents[1]
WHO: contextvars.ContextVar[str | None] = contextvars.ContextVar("who", default=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def access() -> Caller | None:
    who = WHO.get()
    if who is None:
        return None

    def denial(op: Operation) -> str | None:
        return None if op.read_only else f"{who} may not write"

    return Caller(subject=who, denial=denial)


class Host:
    """Routes /mcp/<name> and /sse/<name> (+ /sse/<name>/messages/) to mounted servers; sets WHO."""

    def __init__(self, port: int, *, stateless: bool) -> None:
        security = transport_security("127.0.0.1", port, ())
        self.http: dict[str, MountedServer] = {}
        self.sse: dict[str, MountedServer] = {}
        for name, spec in (
            ("petstore", "specs/petstore3-openapi.yaml"),
            ("httpbin", "specs/httpbin-0.10.4-served-spec.json"),
        ):
            server = CodemodeServer(
                load_spec(str(ROOT / spec)), ServerSettings(name=name), sandbox=LocalSandbox(), access=access
            )
            self.http[name] = mount_http(server, stateless=stateless, security=security)
            self.sse[name] = mount_sse(server, message_path=f"/sse/{name}/messages/", security=security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            async with AsyncExitStack() as stack:
                for m in (*self.http.values(), *self.sse.values()):
                    await stack.enter_async_context(m.lifespan())
                message = await receive()
                assert message["type"] == "lifespan.startup"
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
                await send({"type": "lifespan.shutdown.complete"})
            return
        headers = dict(scope["headers"])
        token = WHO.set(headers.get(b"x-who", b"").decode() or None)
        try:
            parts = scope["path"].strip("/").split("/")
            table = self.http if parts[0] == "mcp" else self.sse
            await table[parts[1]].handle(scope, receive, send)  # type: ignore[operator]
        finally:
            WHO.reset(token)


class Who(httpx2.Auth):
    def __init__(self) -> None:
        self.name = "alice"

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, Any, None]:
        request.headers["X-Who"] = self.name
        yield request


@asynccontextmanager
async def running(*, stateless: bool) -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(Host(port, stateless=stateless), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def _search_twice(session: ClientSession, who: Who) -> tuple[str, str]:
    await session.initialize()
    who.name = "alice"
    first = await session.call_tool("search", {"query": "add a new pet to the store"})
    who.name = "bob"
    second = await session.call_tool("search", {"query": "add a new pet to the store"})
    return first.content[0].text, second.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])
async def test_identity_reaches_the_tool_handler_over_streamable_http(stateless: bool) -> None:
    async with running(stateless=stateless) as port:
        who = Who()
        async with httpx2.AsyncClient(auth=who, timeout=30) as http:
            async with streamable_http_client(f"http://127.0.0.1:{port}/mcp/petstore", http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    first, second = await _search_twice(session, who)
            assert "alice may not write" in first and "bob" not in first
            assert "bob may not write" in second and "alice" not in second
            # the second mount is its own server
            async with streamable_http_client(f"http://127.0.0.1:{port}/mcp/httpbin", http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    tools = await session.list_tools()
                    hits = await session.call_tool("search", {"query": "status code"})
            assert {t.name for t in tools.tools} == {"search", "execute"}
            assert "/status/" in hits.content[0].text  # type: ignore[union-attr]


async def test_identity_reaches_the_tool_handler_over_sse() -> None:
    async with running(stateless=False) as port:
        who = Who()
        async with sse_client(f"http://127.0.0.1:{port}/sse/petstore", auth=who) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                first, second = await _search_twice(session, who)
        assert "alice may not write" in first and "bob" not in first
        assert "bob may not write" in second and "alice" not in second


async def test_mounted_sse_refuses_a_foreign_host() -> None:
    async with running(stateless=False) as port:
        async with httpx2.AsyncClient(timeout=10) as http:
            r = await http.get(f"http://127.0.0.1:{port}/sse/petstore", headers={"Host": "evil.example.com"})
            put = await http.put(f"http://127.0.0.1:{port}/sse/petstore")
        assert r.status_code in (400, 421)
        assert put.status_code == 405
