"""Mounting a :class:`~codemode._server.CodemodeServer` inside another ASGI application.

``codemode serve`` runs one server as its own app. A host that serves several (the OAuth portal)
mounts each one under its own path instead, and wraps it in its own middleware. This module
gives it two ASGI handlers built on the SDK's transports:

* :func:`mount_http`: streamable HTTP. The handler answers every request it is given, whatever
  its path (the host routes ``/mcp/<name>`` to it). ``lifespan()`` runs the session manager.
* :func:`mount_sse`: legacy SSE. ``GET`` opens the stream; the client is told to ``POST`` its
  messages to ``message_path`` (an absolute path the host routes back to the same handler).

Both hold the server's shared resources (upstream client, executor) open for as long as the
``lifespan()`` runs. Anything a middleware stores in a ``contextvars.ContextVar`` before calling
the handler is visible in the tool handlers (the SDK carries the sender's context with each
message), which is how a host tells the server's ``access`` hook who is calling.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import DEFAULT_SESSION_IDLE_TIMEOUT, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from ._server import CodemodeServer

__all__ = ["MountedServer", "mount_http", "mount_sse"]


def _no_sessions(_subject: str) -> int:
    return 0


@dataclass(frozen=True)
class MountedServer:
    """An ASGI handler for one server and the lifespan the host must run around it.

    ``open_sessions(subject)`` counts the live streamable-HTTP sessions that ``subject`` (the
    ``AccessToken.subject`` a host's middleware put in the scope) opened, so the host can cap them
    per user (0 for SSE and stateless mounts: the host counts SSE streams itself)."""

    handle: Callable[[Scope, Receive, Send], object]
    lifespan: Callable[[], AbstractAsyncContextManager[None]]
    open_sessions: Callable[[str], int] = _no_sessions


def mount_http(
    server: CodemodeServer,
    *,
    stateless: bool = False,
    security: TransportSecuritySettings | None = None,
    max_sessions: int | None = None,
    session_idle_seconds: float | None = DEFAULT_SESSION_IDLE_TIMEOUT,
) -> MountedServer:
    """Streamable HTTP for ``server``; stateless mode answers with JSON (for replicas).

    ``max_sessions`` caps the live sessions of this server (the SDK answers 503 beyond it): each
    holds a task and its streams until the client ends it or it idles for ``session_idle_seconds``.
    """
    manager = StreamableHTTPSessionManager(
        app=server.mcp._lowlevel_server, json_response=stateless, stateless=stateless, security_settings=security,
        max_sessions=max_sessions, session_idle_timeout=session_idle_seconds,
    )  # fmt: skip

    def open_sessions(subject: str) -> int:
        # The SDK records who opened each live session (and forgets it when the session ends).
        owners = manager._session_owners.values()
        return sum(1 for owner in owners if owner.get("subject") == subject)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with server.serving(), manager.run():
            yield

    return MountedServer(handle=manager.handle_request, lifespan=lifespan, open_sessions=open_sessions)


def mount_sse(
    server: CodemodeServer, *, message_path: str, security: TransportSecuritySettings | None = None
) -> MountedServer:
    """Legacy SSE for ``server``: ``GET`` any path opens a stream, ``POST`` posts a message."""
    transport = SseServerTransport(message_path, security_settings=security)
    lowlevel = server.mcp._lowlevel_server

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "POST":
            await transport.handle_post_message(scope, receive, send)
            return
        if scope.get("method") != "GET":
            await Response("Method Not Allowed", status_code=405, headers={"Allow": "GET, POST"})(scope, receive, send)
            return
        # The message path is absolute: no root_path prefix from the host's routing.
        try:
            async with transport.connect_sse({**scope, "root_path": ""}, receive, send) as (read, write):
                await lowlevel.run(read, write, lowlevel.create_initialization_options())
        except ValueError as exc:  # the SDK refused the Host/Origin and has already answered (421/403)
            if str(exc) != "Request validation failed":
                raise

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with server.serving():
            yield

    return MountedServer(handle=handle, lifespan=lifespan)
