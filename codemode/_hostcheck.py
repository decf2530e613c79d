"""An exact Host/Origin check in front of the MCP SDK's DNS-rebinding protection.

The SDK (mcp 2.3) matches its allow-list entries ``127.0.0.1:*`` by prefix, so it accepts
``Host: 127.0.0.1:1.evil.example`` (a browser cannot send that, so DNS rebinding stays blocked,
but the check is weaker than it reads). This ASGI middleware accepts only a Host that is
exactly one of the server's names with its port, and an Origin (when present) that is exactly
one of the server's origins; anything else gets 421 (Host) or 403 (Origin) before the SDK
sees the request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["LOOPBACK_NAMES", "ExactHostCheck"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::")  # noqa: S104 - names, not a bind
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::([0-9]{1,5}))?$")
_ORIGIN = re.compile(r"^(https?)://([^/?#]+)$")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _split(host: str) -> tuple[str, int | None] | None:
    match = _HOST.match(host.strip())
    if match is None:
        return None
    port = match.group(2)
    if port is not None and not 0 < int(port) < 65536:
        return None
    return match.group(1).lower(), int(port) if port is not None else None


class ExactHostCheck:
    """Wraps an ASGI app; see the module docstring.

    ``allowed_hosts`` entries are ``name`` (that name with the server's port, or with no port)
    or ``name:port`` (exactly).
    """

    def __init__(self, app: ASGIApp, *, host: str, port: int, allowed_hosts: tuple[str, ...] = ()) -> None:
        self.app = app
        hosts: set[tuple[str, int | None]] = {(name, port) for name in LOOPBACK_NAMES}
        if host not in (*LOOPBACK_NAMES, "::1", *WILDCARD_BINDS):
            hosts.add((host.lower() if not host.count(":") > 1 else f"[{host.lower()}]", port))
        origins: set[str] = {f"http://{name}:{port}" for name in LOOPBACK_NAMES}
        for entry in allowed_hosts:
            split = _split(entry)
            if split is None:
                raise ValueError(f"allowed host {entry!r} is not a host name or name:port")
            name, entry_port = split
            for candidate in [entry_port] if entry_port is not None else [port, None]:
                hosts.add((name, candidate))
                shown = name if candidate is None else f"{name}:{candidate}"
                origins.update((f"https://{shown}", f"http://{shown}"))
        self.hosts = frozenset(hosts)
        self.origins = frozenset(origins)

    def host_ok(self, host: str | None) -> bool:
        split = _split(host) if host else None
        return split is not None and split in self.hosts

    def origin_ok(self, origin: str | None) -> bool:
        if origin is None:
            return True  # same-origin requests and non-browser clients send none
        match = _ORIGIN.match(origin.strip())
        if match is None or not self.host_ok(match.group(2)):
            return False
        split = _split(match.group(2))
        assert split is not None
        name, port = split
        return f"{match.group(1)}://{name}{'' if port is None else f':{port}'}" in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # the MCP transports have no websocket routes
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
            if not self.host_ok(headers.get("host")):
                await _refuse(send, 421, "Invalid Host header")
                return
            if not self.origin_ok(headers.get("origin")):
                await _refuse(send, 403, "Invalid Origin header")
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
