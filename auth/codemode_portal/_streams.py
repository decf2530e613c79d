"""Open legacy-SSE streams (``GET /sse/<name>``), ended when their authorization is withdrawn.

Every message a client sends on the SSE transport is its own ``POST`` and its token is checked
then, but the stream that carries the answers is one long request. Left alone, a stream whose
grant was revoked stays open: the SDK's SSE client only logs the refused ``POST`` and the call
waits for an answer that never comes. So a stream ends (the response is closed cleanly, and the
client sees its session end):

* at once, when a message ``POST`` for its session is refused because the token was revoked,
  and that token belongs to the same user and client as the stream (so nobody who merely learnt
  a session id can end someone else's stream);
* within ``sse_recheck_seconds`` otherwise: each stream looks its grant up again at that
  interval (the revocation may come from ``/account``, the CLI, a replayed refresh token or
  another replica). An unreachable database leaves the stream open until the next check.

An expired access token does not end a stream: the client refreshes and goes on posting.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from starlette.types import Message, Receive, Scope, Send

from ._errors import StoreError
from ._store import AsyncStore, TokenRecord

__all__ = ["SESSION_ID", "LiveStream", "SseStreams"]

log = logging.getLogger("codemode.portal.resource")
SESSION_ID = re.compile(rb"session_id=([0-9a-f]{32})")  # in the SDK's first event: the message endpoint


@dataclass(eq=False)
class LiveStream:
    server: str
    user_id: str
    client_id: str
    grant_id: str
    session_id: str | None = None
    ended: str | None = None  # why the portal ended it
    end: anyio.Event = field(default_factory=anyio.Event)


class SseStreams:
    """The open SSE streams of one portal process, by SDK session id.

    A stream is ended the way a client ends it: its handler receives ``http.disconnect``, so the
    SDK closes the session and its streams itself (cancelling it would leave them open). Should
    the handler not return within ``END_GRACE`` seconds of that, it is cancelled."""

    END_GRACE = 10.0

    def __init__(self, astore: AsyncStore, *, recheck_seconds: float) -> None:
        self.astore = astore
        self.recheck_seconds = recheck_seconds
        self._by_session: dict[str, LiveStream] = {}

    async def serve(
        self, handle: Callable[[Scope, Receive, Send], Awaitable[None]], scope: Scope, receive: Receive, send: Send,
        *, server: str, token: TokenRecord,
    ) -> None:  # fmt: skip
        """Run the SDK's SSE handler for one ``GET``, ending it when its grant is revoked."""
        live = LiveStream(server, token.user_id, token.client_id, token.grant_id)
        started = finished = False

        async def tracked(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body":
                if live.session_id is None:
                    found = SESSION_ID.search(message.get("body", b""))
                    if found is not None:
                        live.session_id = found.group(1).decode()
                        self._by_session[live.session_id] = live
                finished = not message.get("more_body", False)
            await send(message)

        async def receive_until_ended() -> Message:
            """The client's next message, or ``http.disconnect`` once the portal ends the stream."""
            if live.end.is_set():
                return {"type": "http.disconnect"}
            got: Message = {"type": "http.disconnect"}
            async with anyio.create_task_group() as race:

                async def from_client() -> None:
                    nonlocal got
                    got = await receive()
                    race.cancel_scope.cancel()

                async def from_portal() -> None:
                    await live.end.wait()
                    race.cancel_scope.cancel()

                race.start_soon(from_client)
                race.start_soon(from_portal)
            return got if not live.end.is_set() else {"type": "http.disconnect"}

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, live)
                tg.start_soon(self._reap, live, tg.cancel_scope)
                await handle(scope, receive_until_ended, tracked)
                tg.cancel_scope.cancel()
        finally:
            if live.session_id is not None:
                self._by_session.pop(live.session_id, None)
        if live.ended is not None:
            log.info("SSE stream of server %s ended: %s", server, live.ended)
            if started and not finished:  # close the chunked response properly: the client sees the end
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    def refused(self, session_id: str | None, token: TokenRecord, server: str) -> bool:
        """A message ``POST`` for ``session_id`` was refused because ``token`` is revoked: end
        that session's stream if it is the same user's and client's. True if one was ended."""
        live = self._by_session.get(session_id or "")
        if live is None or (live.server, live.user_id, live.client_id) != (server, token.user_id, token.client_id):
            return False
        self._end(live, "a message was sent with a revoked token")
        return True

    def _end(self, live: LiveStream, why: str) -> None:
        if live.ended is None:
            live.ended = why
            live.end.set()

    async def _reap(self, live: LiveStream, scope: anyio.CancelScope) -> None:
        await live.end.wait()
        await anyio.sleep(self.END_GRACE)
        scope.cancel()

    async def _watch(self, live: LiveStream) -> None:
        while not live.end.is_set():
            await anyio.sleep(self.recheck_seconds)
            try:
                grant = await self.astore.call(self.astore.store.get_grant, live.grant_id)
            except StoreError:  # the database is down: keep the stream, check again later
                continue
            if grant is None or grant.revoked_at is not None:
                self._end(live, "its grant was revoked")
