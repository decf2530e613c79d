"""The HTTP client of ``codemode connect``: the SDK's streamable HTTP transport sends through it.

Two things on top of ``httpx2.AsyncClient``:

* **Failures become JSON-RPC errors the MCP client can show.** A network failure, a sign-in that
  did not complete, or a final 401/403 from the portal is turned into an HTTP error response whose
  body is a JSON-RPC error (``code`` -32000, ``data.reason`` a ``connect.*`` code). The SDK's
  transport answers the pending request with it, so the person reads *why* in their client, and
  the bridge keeps running: the next request tries again (after the portal is back, or with a new
  sign-in).
* **Bounded responses.** Every response body (the portal's and the authorization server's) is cut
  off past ``max_response_bytes``; event streams are bounded per event by the SDK
  (``max_sse_event_size``), which the bridge sets to the same value. Bodies are asked for
  uncompressed (``Accept-Encoding: identity``) and a compressed one is refused: the cap counts the
  bytes on the wire, and a few KiB of gzip can inflate to gigabytes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from mcp.client.auth import OAuthFlowError

from ._callback import clean_text
from ._errors import CodemodeError

__all__ = ["BRIDGE_ERROR", "BridgeHttpClient", "ResponseTooLarge"]

BRIDGE_ERROR = -32000
log = logging.getLogger("codemode.connect")
_PARAM = re.compile(r'(\w+)="([^"]*)"')


class ResponseTooLarge(httpx2.StreamError):
    """A response body went past ``max_response_bytes``."""


class _Capped(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, cap: int) -> None:
        self.inner = inner
        self.cap = cap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.inner:
            seen += len(chunk)
            if seen > self.cap:
                raise ResponseTooLarge(f"the response is larger than {self.cap} bytes (codemode connect's limit)")
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class BridgeHttpClient(httpx2.AsyncClient):
    def __init__(self, server_url: str, *, max_response_bytes: int, **kwargs: Any) -> None:
        self.server_url = server_url
        self._server = httpx2.URL(server_url)
        self.max_response_bytes = max_response_bytes
        hooks = kwargs.pop("event_hooks", {}) or {}
        hooks = {**hooks, "response": [*hooks.get("response", []), self._cap]}
        headers = {**(kwargs.pop("headers", None) or {}), "accept-encoding": "identity"}
        super().__init__(event_hooks=hooks, headers=headers, **kwargs)

    async def _cap(self, response: httpx2.Response) -> None:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):  # asked for identity; a compressed body could inflate past any cap
            await response.aclose()
            raise ResponseTooLarge(
                f"the response is compressed ({clean_text(encoding, 20)}) although codemode connect asked for "
                "none; refused, since it could inflate past the size limit"
            )
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return  # bounded per event by the transport
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_response_bytes:
            await response.aclose()
            raise ResponseTooLarge(
                f"the response is larger than {self.max_response_bytes} bytes (codemode connect's limit)"
            )
        response.stream = _Capped(response.stream, self.max_response_bytes)

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:  # type: ignore[override]
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        try:
            response = await super().send(request, **kwargs)
        except ResponseTooLarge as exc:
            return _error(request, 502, "connect.too_large", f"codemode connect: {exc}; nothing was forwarded")
        except httpx2.TimeoutException:
            return _error(request, 504, "connect.timeout", f"codemode connect: {origin} did not answer in time")
        except httpx2.TransportError as exc:
            why = clean_text(str(exc) or type(exc).__name__, 120)
            return _error(
                request, 502, "connect.unreachable",
                f"codemode connect: cannot reach {origin} ({why}). Is the portal running, and is the URL right? "
                "The next request tries again.",
            )  # fmt: skip
        except CodemodeError as exc:  # sign-in not completed, token file unusable
            return _error(request, 401, exc.code, f"codemode connect: {exc.message}")
        except OAuthFlowError as exc:
            return _error(
                request, 401, "connect.auth.flow",
                f"codemode connect: signing in to the portal failed: {clean_text(str(exc), 300)}",
            )  # fmt: skip
        if response.status_code < 400 or request.url != self._server:
            return response
        if response.status_code in (401, 403):
            await response.aclose()
            return _refused(request, response)
        try:
            body = await response.aread()
        except httpx2.HTTPError:  # (ResponseTooLarge included)
            body = b""
        finally:
            await response.aclose()
        data = _json_object(body)
        if data is not None and data.get("jsonrpc") == "2.0":  # the MCP server's own error: as it is
            return httpx2.Response(response.status_code, headers={"content-type": "application/json"},
                                   content=body, request=request)  # fmt: skip
        return _portal_error(request, response, data or {})


def _refused(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
    challenge = response.headers.get("www-authenticate", "")
    params = dict(_PARAM.findall(challenge))
    error = clean_text(params.get("error", ""), 60)
    description = clean_text(params.get("error_description", ""), 200)
    scope = clean_text(params.get("scope", ""), 200)
    if response.status_code == 403:
        message = (
            f"codemode connect: the portal refused this request (403 {error or 'forbidden'}"
            + (f": {description}" if description else "")
            + ")."
            + (f" It needs the scope {scope}: sign in again and approve it on the consent page." if scope else "")
        )
        return _error(request, 403, "connect.forbidden", message, scope=scope or None)
    message = (
        f"codemode connect: the portal refused this bridge's token (401 {error or 'unauthorized'}"
        + (f": {description}" if description else "")
        + ") and signing in again did not help. The next request starts a new sign-in."
    )
    return _error(request, 401, "connect.unauthorized", message)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _portal_error(request: httpx2.Request, response: httpx2.Response, body: dict[str, Any]) -> httpx2.Response:
    """Any other refusal of an MCP request (503 while the portal's database is away, 429 too many
    sessions, 404 for a session the portal no longer knows…), said in words."""
    status = response.status_code
    error = clean_text(str(body.get("error", "")), 60)
    description = clean_text(str(body.get("error_description", "")), 200)
    retry = response.headers.get("retry-after", "")
    message = f"codemode connect: the portal answered {status}" + (f" {error}" if error else "")
    message += f": {description}" if description else ""
    if status == 404 and "mcp-session-id" in request.headers:
        message += (" (the portal no longer knows this MCP session: it was restarted or the session ended; "
                    "reconnect this server in your MCP client)")  # fmt: skip
    elif retry.isdigit():
        message += f" (try again in {int(retry)} s)"
    return _error(request, status, "connect.portal", message, http_status=status, error=error or None)


def _error(request: httpx2.Request, status: int, reason: str, message: str, **data: Any) -> httpx2.Response:
    log.warning("%s", message.removeprefix("codemode connect: "))
    extra = {k: v for k, v in data.items() if v is not None}
    body = {"jsonrpc": "2.0", "id": None,
            "error": {"code": BRIDGE_ERROR, "message": message, "data": {"reason": reason, **extra}}}  # fmt: skip
    return httpx2.Response(
        status, headers={"content-type": "application/json"}, content=json.dumps(body).encode(), request=request
    )
