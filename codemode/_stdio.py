"""The stdio transport: the SDK's, with requests that carry a lone surrogate escape served, not dropped.

JSON allows ``"\\ud800"`` (a lone surrogate: what a client that cut an emoji in half sends); the
SDK's strict JSON parser refuses the whole line and drops it, so the client waits forever for an
answer to that request. :class:`SurrogateRepair` sits between the SDK's stdin reader and the
server: such a line is parsed again with the lone surrogates replaced by U+FFFD, and served.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from mcp import types
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from ._text import SURROGATE_ESCAPE, without_lone_surrogates

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from mcp.shared._stream_protocols import ReadStream

__all__ = ["SurrogateRepair", "repaired", "serve_stdio"]

Item = SessionMessage | Exception


def repaired(item: Item) -> Item:
    """``item``, or for a line the SDK refused only for its lone surrogate escapes, the message it holds."""
    if not isinstance(item, ValidationError):
        return item
    errors = item.errors(include_url=False)
    line = errors[0].get("input") if errors and errors[0].get("type") == "json_invalid" else None
    if not isinstance(line, str) or not SURROGATE_ESCAPE.search(line):
        return item
    try:
        message = types.jsonrpc_message_adapter.validate_python(
            without_lone_surrogates(json.loads(line)), by_name=False
        )
    except (ValueError, ValidationError):  # not JSON for another reason too: the SDK's error stands
        return item
    return SessionMessage(message)


class SurrogateRepair:
    """A read stream that passes on what ``inner`` yields, through :func:`repaired`."""

    def __init__(self, inner: ReadStream[Item]) -> None:
        self._inner = inner

    @property
    def last_context(self) -> Any:
        """The sender's context of the last item (the SDK reads it when present)."""
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Item:
        return repaired(await self._inner.receive())

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Item:
        return repaired(await self._inner.__anext__())

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc, tb)


async def serve_stdio(mcp: MCPServer) -> None:
    """What ``mcp.run("stdio")`` does, with :class:`SurrogateRepair` on the read side."""
    from mcp.server.stdio import stdio_server

    lowlevel = mcp._lowlevel_server  # the SDK's own stdio serving goes through it
    async with stdio_server() as (read_stream, write_stream):
        await lowlevel.run(SurrogateRepair(read_stream), write_stream, lowlevel.create_initialization_options())
