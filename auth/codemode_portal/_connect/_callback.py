"""The loopback redirect target of ``codemode connect``: ``http://127.0.0.1:<port>/callback``.

It listens only while a sign-in waits for its answer, on 127.0.0.1 only. It accepts exactly one
request: ``GET /callback`` whose ``state`` equals the one this sign-in sent (compared in constant
time). Anything else (another path, another method, a missing or foreign ``state``, a request
larger than ``max_request_bytes`` or slower than ``read_timeout``) gets a short error page and is
otherwise ignored, so another local program that connects first can neither end nor answer the
sign-in. (It could not use a code it saw either: the code is bound to this bridge's PKCE verifier.)
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from mcp.client.auth import AuthorizationCodeResult

from ._errors import AuthorizationFailed

__all__ = ["CALLBACK_PATH", "LoopbackCallback", "clean_text"]

CALLBACK_PATH = "/callback"
_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><main><h1>{title}</h1><p>{text}</p></main></body></html>"""


def clean_text(value: str, limit: int = 200) -> str:
    """Text from elsewhere (a portal's error description), made safe to print on one line."""
    printable = "".join(c if c.isprintable() else " " for c in value)
    return printable[:limit] + ("…" if len(printable) > limit else "")


@dataclass
class _Answer:
    code: str | None
    state: str
    iss: str | None
    error: str | None
    description: str | None


class LoopbackCallback:
    """One listening socket on 127.0.0.1 and the answer of the sign-in it is armed for."""

    def __init__(
        self, *, max_request_bytes: int = 16 * 1024, read_timeout: float = 5.0, max_connections: int = 64
    ) -> None:
        self.max_request_bytes = max_request_bytes
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._connections = 0
        self._server: asyncio.Server | None = None
        self._port = 0
        self._state: str | None = None
        self._answer: asyncio.Future[_Answer] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self._port}{CALLBACK_PATH}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def open(self, port: int = 0) -> None:
        """Listen on 127.0.0.1:``port`` (0: a free one). ``OSError`` when the port is taken."""
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # Windows: no other program may bind it over us
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
            else:  # POSIX: a port whose last answer is in TIME_WAIT can be listened on again
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(8)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=self.max_request_bytes)
        self._port = int(sock.getsockname()[1])

    def expect(self, state: str) -> None:
        """Arm the listener for the sign-in that sent ``state``."""
        self._state = state
        self._answer = asyncio.get_running_loop().create_future()

    async def wait(self, timeout: float) -> AuthorizationCodeResult:
        """The answer to the armed sign-in; ``AuthorizationFailed`` when refused or too late."""
        if self._answer is None:
            raise AuthorizationFailed("no sign-in is waiting for an answer", code="connect.auth.internal")
        try:
            answer = await asyncio.wait_for(asyncio.shield(self._answer), timeout)
        except TimeoutError:
            raise AuthorizationFailed(
                f"the sign-in was not completed within {int(timeout)} s; the next request starts a new one",
                code="connect.auth.timeout",
            ) from None
        finally:
            self._state = None
        if answer.error is not None:
            described = f" ({clean_text(answer.description)})" if answer.description else ""
            raise AuthorizationFailed(
                f"the portal did not authorize this bridge: {clean_text(answer.error, 60)}{described}",
                code="connect.auth.denied" if answer.error == "access_denied" else "connect.auth.refused",
            )
        if not answer.code:
            raise AuthorizationFailed("the portal's answer carried no authorization code", code="connect.auth.refused")
        return AuthorizationCodeResult(code=answer.code, state=answer.state, iss=answer.iss)

    async def aclose(self) -> None:
        server, self._server = self._server, None
        self._state = None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    # serving ---------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._connections >= self.max_connections:  # a flood of idle connections: drop the excess
            writer.close()
            return
        self._connections += 1
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.read_timeout)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                await self._reply(writer, 400, "Bad request", "This is not a request codemode connect understands.")
                return
            status, title, text = self._handle(head)
            await self._reply(writer, status, title, text)
        finally:
            self._connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    def _handle(self, head: bytes) -> tuple[int, str, str]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, "Bad request", "This is not a request codemode connect understands."
        method, target, _ = parts
        url = urlsplit(target)
        if url.path != CALLBACK_PATH:
            return 404, "Not found", "Nothing here."
        if method != "GET":
            return 405, "Method not allowed", "The sign-in answer comes as a GET request."
        try:
            query = parse_qs(url.query, max_num_fields=20, strict_parsing=False)
        except ValueError:
            return 400, "Bad request", "Too many parameters."
        state = (query.get("state") or [""])[0]
        expected = self._state
        answer = self._answer
        if (
            expected is None or answer is None or answer.done()
            or not secrets.compare_digest(state.encode(), expected.encode())
        ):  # fmt: skip
            return 400, "Not expected", "codemode connect is not waiting for this answer. Start the sign-in again."

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        answer.set_result(_Answer(one("code"), state, one("iss"), one("error"), one("error_description")))
        if one("error"):
            return (
                200,
                "Sign-in not completed",
                "The portal did not authorize codemode connect. You can close this tab.",
            )
        return 200, "Signed in", "codemode connect received the answer. You can close this tab."

    async def _reply(self, writer: asyncio.StreamWriter, status: int, title: str, text: str) -> None:
        body = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/html; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\ncache-control: no-store\r\nreferrer-policy: no-referrer\r\n"
            "content-security-policy: default-src 'none'\r\nx-content-type-options: nosniff\r\n"
            "connection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError, TimeoutError):
            writer.write(head.encode("latin-1") + body)
            await asyncio.wait_for(writer.drain(), 5)
