"""The bridge: MCP messages from a local client on stdio, forwarded unchanged to a portal server
over streamable HTTP, and the portal's messages back.

It does not interpret the conversation: ``initialize`` (or ``server/discover``), ``tools/list``,
``tools/call``, notifications, the portal's own requests (elicitation…) and every answer pass
through as they are. What it adds is what HTTP needs and stdio has not: the OAuth token
(:mod:`._auth`), and the per-message headers of the streamable HTTP transport, taken from the
messages themselves (:class:`Headers`): ``MCP-Protocol-Version`` (the version ``initialize``
negotiated, or a 2026 request's ``_meta``), and for 2026 requests ``Mcp-Method``, ``Mcp-Name`` and
the ``Mcp-Param-*`` headers a listed tool declares.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from typing import Any

import anyio
import httpx2
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.shared._stream_protocols import ReadStream, WriteStream  # the SDK's own stream types
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import PROTOCOL_VERSION_META_KEY, JSONRPCError, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse

from codemode._stdio import repaired

__all__ = ["Headers", "forward"]

log = logging.getLogger("codemode.connect")
MAX_PENDING = 10_000  # requests remembered until their answer (initialize, tools/list)
MAX_TOOLS = 10_000  # tools whose Mcp-Param-* headers are remembered
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")  # what a protocol version looks like (it becomes a header)


class Headers:
    """The HTTP headers each outgoing message needs, learned from the conversation."""

    def __init__(self) -> None:
        self.version: str | None = None  # negotiated by initialize (2025-era)
        self._pending: OrderedDict[Any, str] = OrderedDict()  # request id -> method, for the answers we read
        self._param_headers: dict[str, dict[tuple[str, ...], str]] = {}  # tool -> x-mcp-header map

    def outgoing(self, message: SessionMessage) -> SessionMessage:
        msg = message.message
        if not isinstance(msg, JSONRPCRequest | JSONRPCNotification):
            return message  # answers to the portal's requests: the transport adds the version itself
        params = msg.params or {}
        meta = params.get("_meta")
        modern = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
        modern = modern if isinstance(modern, str) and _VERSION.match(modern) else None
        headers: dict[str, str] = {}
        if isinstance(msg, JSONRPCRequest) and msg.method in ("initialize", "tools/list"):
            self._pending[msg.id] = msg.method
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
        if modern is not None:
            headers[MCP_PROTOCOL_VERSION_HEADER] = modern
            headers[MCP_METHOD_HEADER] = msg.method
            key = NAME_BEARING_METHODS.get(msg.method)
            if key is not None and isinstance(name := params.get(key), str):
                headers[MCP_NAME_HEADER] = encode_header_value(name)
            if msg.method == "tools/call" and isinstance(name := params.get("name"), str):
                header_map = self._param_headers.get(name)
                arguments = params.get("arguments")
                if header_map and isinstance(arguments, dict):
                    headers.update(mcp_param_headers(header_map, arguments))
        elif self.version is not None and msg.method != "initialize":
            headers[MCP_PROTOCOL_VERSION_HEADER] = self.version
        if not headers:
            return message
        return SessionMessage(msg, metadata=ClientMessageMetadata(headers=headers))

    def incoming(self, message: SessionMessage) -> None:
        msg = message.message
        if not isinstance(msg, JSONRPCResponse | JSONRPCError):
            return
        method = self._pending.pop(msg.id, None)
        if method is None or not isinstance(msg, JSONRPCResponse):
            return
        if method == "initialize":
            version = msg.result.get("protocolVersion")
            self.version = version if isinstance(version, str) and _VERSION.match(version) else None
        elif method == "tools/list" and isinstance(tools := msg.result.get("tools"), list):
            for tool in tools[:MAX_TOOLS]:
                if not isinstance(tool, dict) or not isinstance(name := tool.get("name"), str):
                    continue
                schema = tool.get("inputSchema")
                if find_invalid_x_mcp_header(schema) is None:
                    header_map = x_mcp_header_map(schema)
                    self._param_headers.pop(name, None)
                    if header_map:
                        self._param_headers[name] = header_map
                        if len(self._param_headers) > MAX_TOOLS:  # drop the oldest entry
                            self._param_headers.pop(next(iter(self._param_headers)))


async def forward(
    local_read: ReadStream[SessionMessage | Exception],
    local_write: WriteStream[SessionMessage],
    remote_read: ReadStream[SessionMessage | Exception],
    remote_write: WriteStream[SessionMessage],
) -> None:
    """Pump messages both ways until the local client goes away (its stdin closes)."""
    headers = Headers()

    async def up() -> None:
        async for raw in local_read:
            item = repaired(raw)  # a lone surrogate escape ("\\ud800", valid JSON) made the SDK drop the request
            if isinstance(item, Exception):
                log.warning("ignored a line from the MCP client that is not a JSON-RPC message: %s",
                            str(item).splitlines()[0][:200])  # fmt: skip
                continue
            await remote_write.send(headers.outgoing(item))
        tg.cancel_scope.cancel()

    async def down() -> None:
        async for item in remote_read:
            if isinstance(item, Exception):
                log.warning("the portal sent something that is not a JSON-RPC message: %s",
                            str(item).splitlines()[0][:200])  # fmt: skip
                continue
            headers.incoming(item)
            await local_write.send(item)
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(up)
        tg.start_soon(down)


async def serve_stdio(server_url: str, http: httpx2.AsyncClient, *, max_event_bytes: int) -> None:
    """Run the bridge on this process's stdin/stdout until stdin closes."""
    async with stdio_server() as (local_read, local_write):
        async with streamable_http_client(server_url, http_client=http, max_sse_event_size=max_event_bytes) as (
            remote_read, remote_write,
        ):  # fmt: skip
            await forward(local_read, local_write, remote_read, remote_write)
