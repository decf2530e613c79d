"""The resource-server side of every ``/mcp/<name>`` and ``/sse/<name>``.

Each request's bearer token is looked up in the store (so a revocation takes effect on the very
next request), and must be: an access token, live (not expired, not revoked, its grant not
revoked), issued for *this* server and for one of its resource URLs under the current issuer
(audience, always checked), and hold ``<name>:read``. Otherwise: 401 ``invalid_token``, or 401
without an error code and with ``scope="<name>:read <name>:write"`` when no token was sent (the
scopes MCP clients then ask for), or 403 ``insufficient_scope`` with ``scope="<name>:read"``, each
with ``WWW-Authenticate: Bearer resource_metadata="…"`` (RFC 9728). Tokens in the query string are
refused. An open SSE stream ends when its grant is revoked (``_streams``). The ``Authorization``
header is removed before the MCP server sees the request: a
client's token never goes further, and never upstream.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.authentication import AuthCredentials
from starlette.types import Receive, Scope, Send

from codemode import Caller

from ._config import PortalSettings
from ._crypto import ACCESS_PREFIX, token_hash
from ._errors import StoreError
from ._hosting import CURRENT_CALLER, CredentialResolver, HostedServer, MissingCredential
from ._store import AsyncStore, TokenView
from ._streams import SseStreams

__all__ = ["MAX_TOKEN_CHARS", "RETRY_AFTER", "UNAVAILABLE", "ResourceServer", "prm_document", "prm_paths"]

log = logging.getLogger("codemode.portal.resource")
MAX_TOKEN_CHARS = 200
RETRY_AFTER = 5  # seconds, when the database cannot be reached
UNAVAILABLE = {"error": "temporarily_unavailable",
               "error_description": "The portal cannot reach its database; try again shortly."}  # fmt: skip


def _prefix(settings: PortalSettings) -> tuple[str, str]:
    parts = urlsplit(settings.issuer)
    return f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")


def prm_url(settings: PortalSettings, transport: str, name: str) -> str:
    origin, prefix = _prefix(settings)
    return f"{origin}/.well-known/oauth-protected-resource{prefix}/{transport}/{name}"


def prm_paths(settings: PortalSettings, transport: str, name: str) -> list[str]:
    """App paths serving one PRM: the path-inserted form (with the public URL's path, if any)."""
    _, prefix = _prefix(settings)
    paths = [f"/.well-known/oauth-protected-resource{prefix}/{transport}/{name}"]
    if prefix:
        paths.append(f"/.well-known/oauth-protected-resource/{transport}/{name}")
    return paths


def prm_document(settings: PortalSettings, hosted: HostedServer, transport: str) -> dict[str, Any]:
    """RFC 9728 metadata of one endpoint of one server."""
    assert hosted.scopes is not None
    return {
        "resource": settings.resource_url(hosted.name, transport),  # type: ignore[arg-type]
        "authorization_servers": [settings.issuer],
        "scopes_supported": list(hosted.scopes.supported),
        "bearer_methods_supported": ["header"],
        "resource_name": hosted.title,
        "resource_documentation": f"{settings.issuer}/",
    }


async def _json(send: Send, status: int, body: Mapping[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"), *headers,
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": data})


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class ResourceServer:
    """The ASGI app for ``/mcp/*`` and ``/sse/*``: checks the token, sets the caller, dispatches."""

    def __init__(
        self, settings: PortalSettings, astore: AsyncStore, hosted: Mapping[str, HostedServer],
        resolver: CredentialResolver,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.astore = astore
        self.hosted = hosted
        self.resolver = resolver
        self._streams: dict[tuple[str, str], int] = {}  # (server, user) -> open SSE streams
        self.sse_streams = SseStreams(astore, recheck_seconds=settings.sse_recheck_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        parts = scope["path"].split("/")  # "", "mcp"|"sse", name, [messages, ""]
        transport, name = parts[1], parts[2] if len(parts) > 2 else ""
        hosted = self.hosted.get(name)
        tail = parts[3:]
        valid_tail = tail in ([], [""]) or (transport == "sse" and tail in (["messages"], ["messages", ""]))
        if hosted is None or not valid_tail:
            await _json(send, 404, {"error": "not_found", "error_description": "No such server."}, [])
            return
        if not hosted.ok:
            await _json(send, 503, {"error": "temporarily_unavailable",
                                    "error_description": f"Server {name} is not available."}, [])  # fmt: skip
            return
        challenge_base = f'Bearer resource_metadata="{_quote(prm_url(self.settings, transport, name))}"'
        assert hosted.scopes is not None
        read_scope = hosted.scopes.read
        write_scope = hosted.scopes.write

        async def refuse(status: int, error: str | None, description: str, *, scope_hint: bool = False) -> None:
            challenge = challenge_base
            if error is not None:
                challenge += f', error="{error}", error_description="{_quote(description)}"'
            if scope_hint:  # 403: the one scope this endpoint needs (step-up)
                challenge += f', scope="{read_scope}"'
            elif error is None:
                # No token yet: name the scopes a full client needs. MCP clients request the scope of
                # this first challenge (the SDK's scope selection), and the consent page offers only
                # what was requested; with read alone the person could never approve writes.
                challenge += f', scope="{read_scope} {write_scope}"'
            body = {"error": error or "invalid_token", "error_description": description}
            await _json(send, status, body, [(b"www-authenticate", challenge.encode())])

        query = scope.get("query_string", b"").decode("latin-1")
        if any(k == "access_token" for k, _ in parse_qsl(query, keep_blank_values=True)):
            await refuse(400, "invalid_request", "Send the token in the Authorization header, never in the URL.")
            return
        auth = [v for k, v in scope["headers"] if k == b"authorization"]
        if not auth:
            await refuse(401, None, "This server needs an OAuth access token.")
            return
        raw = auth[0].decode("latin-1")
        scheme, _, token = raw.partition(" ")
        token = token.strip()
        if len(auth) > 1 or scheme.lower() != "bearer" or not token:
            await refuse(401, "invalid_request", "Send exactly one 'Authorization: Bearer <token>' header.")
            return
        view = None
        if token.startswith(ACCESS_PREFIX) and len(token) <= MAX_TOKEN_CHARS:
            try:
                view = await self.astore.call(self.astore.store.find_token, token_hash(token))
            except StoreError:  # the database is down: say so (never a 401 for a token that may be valid)
                log.warning("token check impossible: the database is unavailable")
                await _json(send, 503, UNAVAILABLE, [(b"retry-after", str(RETRY_AFTER).encode())])
                return
        problem = self._problem(view, name)
        if problem is not None:
            if transport == "sse" and view is not None and (view.grant_revoked or view.token.revoked_at is not None):
                # the client's SSE stream would wait forever for the answer to this message: end it
                session_id = next((v for k, v in parse_qsl(query) if k == "session_id"), None)
                self.sse_streams.refused(session_id, view.token, name)
            await refuse(401, "invalid_token", problem)
            return
        assert view is not None
        tok = view.token
        if read_scope not in tok.scopes:
            await refuse(403, "insufficient_scope", f"This token lacks {read_scope}.", scope_hint=True)
            return
        credentials = None
        if hosted.per_user:
            try:
                credentials = await self.resolver.credentials_for(tok.user_id, name)
            except StoreError:
                await _json(send, 503, UNAVAILABLE, [(b"retry-after", str(RETRY_AFTER).encode())])
                return
            if credentials is None:
                credentials = MissingCredential(name, f"{self.settings.issuer}/account")
        caller = Caller(subject=tok.user_id, client_id=tok.client_id, denial=hosted.scopes.denial(tok.scopes),
                        credentials=credentials)  # fmt: skip
        user = AuthenticatedUser(AccessToken(
            token=tok.hash, client_id=tok.client_id, scopes=list(tok.scopes), expires_at=int(tok.expires_at),
            resource=tok.resource, subject=tok.user_id, claims={"iss": self.settings.issuer},
        ))  # fmt: skip
        inner: Scope = {
            **scope,
            "headers": [(k, v) for k, v in scope["headers"] if k != b"authorization"],
            "user": user,
            "auth": AuthCredentials(list(tok.scopes)),
        }
        mounted = hosted.http if transport == "mcp" else hosted.sse
        assert mounted is not None and hosted.http is not None
        opens = scope["method"] == "GET" if transport == "sse" else scope["method"] == "POST" and not any(
            k == b"mcp-session-id" for k, _ in scope["headers"])  # fmt: skip
        key = (name, tok.user_id)
        limit = self.settings.max_sessions_per_user
        if opens and hosted.http.open_sessions(tok.user_id) + self._streams.get(key, 0) >= limit:
            await _json(send, 429, {"error": "too_many_sessions", "error_description": (
                f"You have {limit} open sessions on server {name}, the most one user may hold. End one "
                "(an MCP client does when it closes), or wait until an idle one expires.")},
                [(b"retry-after", b"60")])  # fmt: skip
            return
        streaming = transport == "sse" and opens
        if streaming:
            self._streams[key] = self._streams.get(key, 0) + 1
        reset = CURRENT_CALLER.set((name, caller))
        try:
            if streaming:
                await self.sse_streams.serve(mounted.handle, inner, receive, send, server=name, token=tok)  # type: ignore[arg-type]
            else:
                await mounted.handle(inner, receive, send)  # type: ignore[misc]
        finally:
            CURRENT_CALLER.reset(reset)
            if streaming:
                left = self._streams[key] - 1
                if left:
                    self._streams[key] = left
                else:
                    del self._streams[key]

    def _problem(self, view: TokenView | None, name: str) -> str | None:
        if view is None or view.token.kind != "access":
            return "The access token is not valid."
        tok = view.token
        if view.grant_revoked or tok.revoked_at is not None:
            return "The access token was revoked."
        if tok.expires_at <= time.time():
            return "The access token expired."
        if tok.server != name or tok.resource not in (
            self.settings.resource_url(name, "mcp"),
            self.settings.resource_url(name, "sse"),
        ):
            return "The access token was issued for another resource."
        return None
