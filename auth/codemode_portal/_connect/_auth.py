"""OAuth for ``codemode connect``: the mcp SDK's ``OAuthClientProvider`` with what a long-lived
local bridge needs on top.

The SDK does discovery (RFC 9728 → RFC 8414, issuer checked), registration (a Client ID Metadata
Document when given and advertised, else RFC 7591), the authorization code flow with PKCE S256 and
RFC 8707 ``resource``, the RFC 9207 ``iss`` check, refresh and scope step-up. This module adds:

* **A token file** (:class:`FileStorage`) with the access token's absolute expiry, so a restarted
  bridge reuses its token until it expires and then refreshes it (the SDK alone would treat a
  reloaded token as valid forever, then send the person back to the browser on the first 401).
* **Refresh first.** A 401 on a token that has a refresh token is answered by a refresh; only when
  that fails does the person see the browser again.
* **Several bridges, one file.** Before each request the bridge adopts tokens another bridge for
  the same URL wrote; refreshes and sign-ins happen under the file's inter-process lock, after
  re-reading it. Refresh tokens rotate and a rotated one presented again revokes the grant, so
  without this two bridges would end each other's access.
* **The redirect listener** (:class:`LoopbackCallback`) on the port the client was registered
  with, opened only while a sign-in waits. A registered port another program holds means a new
  registration on a free port (a Client ID Metadata Document's port cannot change: that is an error).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import fields, replace
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
from mcp.client.auth import OAuthClientProvider, OAuthFlowError
from mcp.client.auth.oauth2 import OAuthContext
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

from codemode import __version__

from .._config import is_loopback_host
from ._callback import CALLBACK_PATH, LoopbackCallback, clean_text
from ._errors import AuthorizationFailed, CodemodeError
from ._tokens import StoredState, TokenFile

__all__ = ["BridgeAuth", "FileStorage", "OpenUrl", "quiet_sdk_flow_errors"]

OpenUrl = Callable[[str], Awaitable[None]]
log = logging.getLogger("codemode.connect")
MAX_RESTARTS = 3
LONG_PAST = 1.0  # an expiry time that has passed (0 would read as "never expires" to the SDK)


class FileStorage:
    """The SDK's ``TokenStorage`` on a :class:`TokenFile` (plus the absolute expiry)."""

    def __init__(self, file: TokenFile) -> None:
        self.file = file

    async def load(self) -> StoredState:
        return await anyio.to_thread.run_sync(self.file.load)

    async def _update(self, **changes: object) -> None:
        def update() -> None:
            self.file.save(replace(self.file.load(), **changes))  # type: ignore[arg-type]

        await anyio.to_thread.run_sync(update)

    async def get_tokens(self) -> OAuthToken | None:
        return (await self.load()).tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        expires_at = time.time() + int(tokens.expires_in) if tokens.expires_in is not None else None
        await self._update(tokens=tokens, expires_at=expires_at)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return (await self.load()).client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        await self._update(client=client_info)

    async def forget_client(self) -> None:
        await self._update(client=None)

    async def forget_tokens(self) -> None:
        await self._update(tokens=None, expires_at=None)


class _Reregister(Exception):
    """The registered redirect port is taken by another program: register anew on a free one."""


class _Context(OAuthContext):
    """The SDK's context, with the access token treated as expired ``margin`` seconds early."""

    margin: float = 30.0

    def update_token_expiry(self, token: OAuthToken) -> None:
        super().update_token_expiry(token)
        if self.token_expiry_time is not None and token.expires_in is not None:
            self.token_expiry_time -= min(self.margin, int(token.expires_in) / 2)


class BridgeAuth(OAuthClientProvider):
    def __init__(
        self,
        server_url: str,
        storage: FileStorage,
        *,
        open_url: OpenUrl,
        client_name: str = "codemode connect",
        client_metadata_url: str | None = None,
        callback_port: int | None = None,
        authorization_timeout: float = 300.0,
        lock_timeout: float = 330.0,
        expiry_margin: float = 30.0,
        callback: LoopbackCallback | None = None,
    ) -> None:
        port = callback_port or 0
        metadata = OAuthClientMetadata(
            client_name=client_name,
            redirect_uris=[AnyUrl(f"http://127.0.0.1:{port}{CALLBACK_PATH}")],
            token_endpoint_auth_method="none",  # noqa: S106 - a method name: a public client
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            software_id="codemode-connect",
            software_version=__version__,
        )
        super().__init__(
            server_url, metadata, storage, redirect_handler=self._redirect, callback_handler=self._answer,
            client_metadata_url=client_metadata_url,
        )  # fmt: skip
        context = _Context(**{f.name: getattr(self.context, f.name) for f in fields(OAuthContext) if f.init})
        context.margin = expiry_margin
        self.context = context
        self.storage = storage
        self.open_url = open_url
        self.callback = callback or LoopbackCallback()
        self.fixed_port = callback_port if client_metadata_url else None
        self.authorization_timeout = authorization_timeout
        self.lock_timeout = lock_timeout
        self.expiry_margin = expiry_margin

    # state -----------------------------------------------------------------------------------

    def _set_redirect_port(self, port: int) -> None:
        self.context.client_metadata.redirect_uris = [AnyUrl(f"http://127.0.0.1:{port}{CALLBACK_PATH}")]

    def _is_metadata_client(self, client: OAuthClientInformationFull | None) -> bool:
        return client is not None and client.client_id == self.context.client_metadata_url

    def _adopt_client(self, client: OAuthClientInformationFull | None) -> None:
        """Use a stored registration, and the redirect port it was registered with."""
        if client is not None and not self._is_metadata_client(client):
            uris = [str(u) for u in client.redirect_uris or ()]
            port = _loopback_port(uris[0]) if uris else None
            if port is None or client.token_endpoint_auth_method not in (None, "none"):
                client = None  # not a registration this bridge made: register again
            else:
                self._set_redirect_port(port)
        self.context.client_info = client

    def _adopt_tokens(self, state: StoredState) -> None:
        self.context.current_tokens = state.tokens
        self.context.token_expiry_time = None
        if state.tokens is not None and state.expires_at is not None:
            lifetime = int(state.tokens.expires_in or 0)
            self.context.token_expiry_time = state.expires_at - min(self.expiry_margin, lifetime / 2)

    async def _initialize(self) -> None:
        state = await self.storage.load()
        self._adopt_tokens(state)
        self._adopt_client(state.client)
        self._initialized = True

    async def _sync(self) -> bool:
        """Adopt what another bridge wrote since we last looked; True when the tokens changed."""
        state = await self.storage.load()
        ours = self.context.current_tokens
        if state.tokens is None or (ours is not None and state.tokens.access_token == ours.access_token):
            return False
        self._adopt_tokens(state)
        if state.client is not None and (
            self.context.client_info is None or state.client.client_id != self.context.client_info.client_id
        ):
            self._adopt_client(state.client)  # fmt: skip
        return True

    # the flow --------------------------------------------------------------------------------

    async def _auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        lock = self.storage.file.lock()
        try:
            if self._initialized:
                await self._sync()
            if self._initialized and not self.context.is_token_valid() and self.context.can_refresh_token():
                await lock.acquire(self.lock_timeout)  # the SDK refreshes next: one bridge at a time
                await self._sync()
            restarts = 0
            challenged = False
            while True:
                flow = super()._auth_flow(request)
                restart = False
                try:
                    outgoing = await flow.__anext__()
                    while True:
                        sent = outgoing.headers.get("authorization") if outgoing is request else None
                        response = yield outgoing
                        if outgoing is request and not challenged and _challenged(response):
                            challenged = True
                            await flow.aclose()  # let go of the SDK's lock before taking the file's
                            await lock.acquire(self.lock_timeout)
                            changed = await self._sync()
                            if (
                                not changed
                                and response.status_code == 401
                                and sent
                                and self.context.can_refresh_token()
                            ):
                                self.context.token_expiry_time = LONG_PAST  # refresh before any browser
                            elif not changed and self.context.client_info is None:
                                await self._listen(self.fixed_port or 0)
                            restart = True
                            break
                        outgoing = await flow.asend(response)
                except StopAsyncIteration:
                    return
                except _Reregister:
                    log.info("the registered redirect port is in use; registering again on a free port")
                    self.context.client_info = None
                    await self.storage.forget_client()
                    await self.callback.aclose()
                    await self._listen(0)
                    restart = True
                finally:
                    await flow.aclose()
                if not restart or restarts >= MAX_RESTARTS:
                    return
                restarts += 1
                request.headers.pop("authorization", None)
        finally:
            # The listener serves the one sign-in in progress; a request that is not signing in
            # (it does not hold the lock while another flow runs) leaves it alone.
            if lock.held or not self.context.lock.locked():
                await self.callback.aclose()
            lock.release()

    async def _handle_refresh_response(self, response: httpx2.Response) -> bool:
        if await super()._handle_refresh_response(response):
            return True
        if response.status_code in (400, 401):  # the portal said no (not: it was down): forget the tokens
            log.warning("the portal refused to refresh the token (the grant was revoked or has expired); "
                        "signing in again")  # fmt: skip
            error = ""
            try:
                body = json.loads(await response.aread())
                error = str(body.get("error", "")) if isinstance(body, dict) else ""
            except (ValueError, httpx2.StreamError):
                pass
            await self.storage.forget_tokens()
            if error == "invalid_client" and not self._is_metadata_client(self.context.client_info):
                self.context.client_info = None  # the registration is gone: register again
                await self.storage.forget_client()
        return False

    async def _listen(self, port: int) -> None:
        await self.callback.open(port)
        self._set_redirect_port(self.callback.port)

    async def _redirect(self, authorization_url: str) -> None:
        parts = urlsplit(authorization_url)
        if not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))):
            raise AuthorizationFailed(
                f"the portal's sign-in address is not an https URL ({clean_text(authorization_url, 80)}); "
                "codemode connect does not open it",
                code="connect.auth.insecure",
            )
        query = parse_qs(parts.query)
        state = (query.get("state") or [""])[0]
        port = _loopback_port((query.get("redirect_uri") or [""])[0])
        if port is None:
            raise AuthorizationFailed("the redirect URI is not a loopback one", code="connect.auth.internal")
        if self.callback.listening and self.callback.port != port:
            await self.callback.aclose()
        if not self.callback.listening:
            try:
                await self.callback.open(port)
            except OSError:
                if self.fixed_port is not None or self._is_metadata_client(self.context.client_info):
                    raise AuthorizationFailed(
                        f"port {port} on 127.0.0.1 is in use, and the client metadata document names "
                        f"http://127.0.0.1:{port}{CALLBACK_PATH} as this client's redirect URI; free the port "
                        "(is another codemode connect signing in?) and try again",
                        code="connect.auth.port_in_use",
                    ) from None
                raise _Reregister from None
        self.callback.expect(state)
        await self.open_url(authorization_url)

    async def _answer(self) -> AuthorizationCodeResult:
        try:
            return await self.callback.wait(self.authorization_timeout)
        finally:
            await self.callback.aclose()


def _challenged(response: httpx2.Response) -> bool:
    if response.status_code == 401:
        return True
    return response.status_code == 403 and "insufficient_scope" in response.headers.get("www-authenticate", "")


def _loopback_port(uri: str) -> int | None:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "http" or parts.hostname != "127.0.0.1" or not port:
        return None
    return port


class _QuietFlowErrors(logging.Filter):
    """The SDK logs every exception of its OAuth flow with a traceback; ours are reported once,
    on one line, by the bridge."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, CodemodeError | _Reregister | OAuthFlowError | httpx2.HTTPError | httpx2.StreamError)


def quiet_sdk_flow_errors() -> None:
    logger = logging.getLogger("mcp.client.auth.oauth2")
    if not any(isinstance(f, _QuietFlowErrors) for f in logger.filters):
        logger.addFilter(_QuietFlowErrors())
