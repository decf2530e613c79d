"""A loopback HTTP upstream that misbehaves on purpose, one way per path.

It speaks just enough HTTP/1.1 by hand (raw asyncio streams in a background thread) to do what a
well-behaved server framework would not: stall, reset the connection, cut a body short, stream
a gigabyte, lie about JSON, fail in bursts, redirect elsewhere. Every request is recorded with
its arrival time. Stop it by leaving the ``with`` block.

Paths: ``/stall``, ``/reset``, ``/truncated``, ``/huge`` (1 GB, chunked), ``/huge-declared``
(``Content-Length`` of 1 GB), ``/bad-json``, ``/burst`` (503 for the first ``burst`` requests,
then 200), ``/retry-after`` (always 503 with ``Retry-After: 1``), ``/redirect`` (302 to the
``redirect_to`` URL), ``/ok``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["FaultyUpstream", "faulty_upstream"]

GIGABYTE = 1 << 30
_CHUNK = b"x" * (1 << 20)


@dataclass
class FaultyUpstream:
    base_url: str
    redirect_to: str = "http://127.0.0.1:9/"
    burst: int = 2
    arrivals: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)  # (monotonic, path, headers)
    sent_bytes: dict[str, int] = field(default_factory=dict)

    def hits(self, path: str) -> list[float]:
        return [at for at, p, _ in self.arrivals if p == path]


async def _handle(state: FaultyUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1].split("?")[0]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    state.arrivals.append((time.monotonic(), path, headers))
    try:
        await _answer(state, path, writer)
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _response(status: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


async def _answer(state: FaultyUpstream, path: str, writer: asyncio.StreamWriter) -> None:
    if path == "/stall":
        await asyncio.sleep(3600)
    elif path == "/reset":
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        writer.transport.abort()
    elif path == "/truncated":
        writer.write(_response("200 OK", {"Content-Type": "application/json", "Content-Length": "1000"}, b'{"a": [1,'))
        await writer.drain()
    elif path in ("/huge", "/huge-declared"):
        declared = path == "/huge-declared"
        head = {"Content-Type": "application/json"}
        head.update({"Content-Length": str(GIGABYTE)} if declared else {"Transfer-Encoding": "chunked"})
        writer.write(_response("200 OK", head))
        sent = 0
        while sent < GIGABYTE:
            writer.write(_CHUNK if declared else b"%x\r\n%s\r\n" % (len(_CHUNK), _CHUNK))
            await writer.drain()
            sent += len(_CHUNK)
            state.sent_bytes[path] = sent
    elif path == "/bad-json":
        body = b'{"items": [1, 2,, "not json'
        writer.write(_response("200 OK", {"Content-Type": "application/json", "Content-Length": str(len(body))}, body))
    elif path == "/burst":
        if len(state.hits("/burst")) <= state.burst:
            writer.write(_response("503 Service Unavailable", {"Content-Length": "0"}))
        else:
            body = b'{"ok": true}'
            writer.write(_response("200 OK", {"Content-Type": "application/json", "Content-Length": "12"}, body))
    elif path == "/retry-after":
        writer.write(_response("503 Service Unavailable", {"Retry-After": "1", "Content-Length": "0"}))
    elif path == "/redirect":
        body = f'<a href="{state.redirect_to}">moved</a>'.encode()
        writer.write(_response("302 Found", {"Location": state.redirect_to, "Content-Type": "text/html",
                                             "Content-Length": str(len(body))}, body))  # fmt: skip
    else:
        writer.write(_response("200 OK", {"Content-Type": "application/json", "Content-Length": "2"}, b"{}"))
    await writer.drain()


@contextlib.contextmanager
def faulty_upstream(**options: object) -> Iterator[FaultyUpstream]:
    """Serve on a free 127.0.0.1 port until the block ends."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def start() -> None:
        state = FaultyUpstream(base_url="", **options)  # type: ignore[arg-type]
        server = await asyncio.start_server(lambda r, w: _handle(state, r, w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        state.base_url = f"http://127.0.0.1:{port}"
        holder.update(server=server, state=state)
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, name="faulty-upstream", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield holder["state"]  # type: ignore[misc]
    finally:

        async def stop() -> None:
            server = holder["server"]
            server.close()  # type: ignore[attr-defined]
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
