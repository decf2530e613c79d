"""The portal as an OAuth 2 *client* of other servers (upstream APIs, an OpenID Connect provider),
through authlib's httpx client: authorization URLs with PKCE S256, code exchange, refresh,
RFC 7009 revocation, and RFC 8414 / OIDC discovery.

Every failure becomes a :class:`ProviderError` whose message names the provider's host and the
OAuth ``error`` code, never a token, a secret or the provider's free-text description (which
could echo one). ``refused`` is true when the provider answered with an OAuth error such as
``invalid_grant`` (the grant is dead), false when it could not be reached or answered nonsense
(worth trying again later).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.httpx_client import AsyncOAuth2Client

from codemode._scrub import MIN_SUBSTRING_LENGTH

from ._errors import PortalError

__all__ = [
    "PROVIDER_TIMEOUT_SECONDS",
    "ClientRegistration",
    "ProviderError",
    "TokenSet",
    "authorization_url",
    "discover",
    "exchange_code",
    "fetch_json",
    "host_of",
    "refresh",
    "revoke",
]

PROVIDER_TIMEOUT_SECONDS = 10.0
MAX_METADATA_BYTES = 256_000
_OAUTH_ERROR_CODE_CHARS = 60
# What a provider call can raise: OAuth errors (authlib), transport errors (httpx2) and bodies that
# are not JSON objects (ValueError). Anything else is a bug and is not disguised as a provider error.
_FAILURES = (AuthlibBaseError, httpx2.HTTPError, ValueError)


class ProviderError(PortalError):
    code = "portal.provider"

    def __init__(self, message: str, *, refused: bool, error: str | None = None) -> None:
        super().__init__(message, code="portal.provider.refused" if refused else "portal.provider.unavailable")
        self.refused = refused
        self.error = error


@dataclass(frozen=True)
class ClientRegistration:
    """The portal's registration at one provider."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    auth_method: str = "none"  # none | client_secret_basic | client_secret_post

    def client(self, **kwargs: Any) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id, client_secret=self.client_secret, token_endpoint_auth_method=self.auth_method,
            revocation_endpoint_auth_method=self.auth_method, code_challenge_method="S256",
            timeout=PROVIDER_TIMEOUT_SECONDS, follow_redirects=False, **kwargs,
        )  # fmt: skip


@dataclass(frozen=True)
class TokenSet:
    """A token endpoint's answer, checked. ``expires_at`` is wall-clock time (None: no expiry given)."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    scope: tuple[str, ...] = ()
    id_token: str | None = field(default=None, repr=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def authorization_url(
    endpoint: str, reg: ClientRegistration, *, redirect_uri: str, scopes: tuple[str, ...], state: str,
    verifier: str, extra: Mapping[str, str] | None = None,
) -> str:  # fmt: skip
    """The URL to send the browser to: code flow, PKCE S256, ``state`` (and ``nonce`` etc. in ``extra``)."""
    client = reg.client(redirect_uri=redirect_uri, scope=" ".join(scopes) or None)
    url, _ = client.create_authorization_url(endpoint, state=state, code_verifier=verifier, **dict(extra or {}))
    return str(url)


def _token_set(token: Mapping[str, Any], where: str, *, started: float, asked: tuple[str, ...]) -> TokenSet:
    access = token.get("access_token")
    if not isinstance(access, str) or not access or len(access) > 16_000:
        raise ProviderError(f"{where} answered without a usable access_token.", refused=False)
    if len(access) < MIN_SUBSTRING_LENGTH:  # too short to be recognised (scrubbed) in what the API sends back
        raise ProviderError(f"{where} issued an access token too short to keep secret.", refused=False)
    kind = str(token.get("token_type") or "bearer")
    if kind.lower() != "bearer":
        raise ProviderError(f"{where} issued a {kind[:20]!r} token; only bearer tokens are supported.", refused=True)
    refresh_token = token.get("refresh_token")
    if refresh_token is not None and (not isinstance(refresh_token, str) or len(refresh_token) > 16_000):
        raise ProviderError(f"{where} answered with a malformed refresh_token.", refused=False)
    expires_at: float | None = None
    expires_in = token.get("expires_in")
    if isinstance(expires_in, int | float | str) and not isinstance(expires_in, bool):
        try:
            seconds = float(expires_in)
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds) and seconds >= 0:
            expires_at = started + seconds
    scope = token.get("scope")
    scopes = tuple(scope.split()) if isinstance(scope, str) else asked
    id_token = token.get("id_token")
    return TokenSet(access, refresh_token or None, expires_at, scopes,
                    id_token if isinstance(id_token, str) else None, dict(token))  # fmt: skip


def _failure(exc: Exception, where: str) -> ProviderError:
    if isinstance(exc, AuthlibBaseError):
        error = str(getattr(exc, "error", "") or "error")[:_OAUTH_ERROR_CODE_CHARS]
        return ProviderError(f"{where} refused: {error}.", refused=True, error=error)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return ProviderError(f"{where} answered HTTP {status}.", refused=False)
    return ProviderError(f"{where} could not be reached or answered badly ({type(exc).__name__}).", refused=False)


async def exchange_code(
    token_url: str, reg: ClientRegistration, *, code: str, verifier: str, redirect_uri: str, asked: tuple[str, ...]
) -> TokenSet:
    where = f"the token endpoint at {host_of(token_url)}"
    started = time.time()
    try:
        async with reg.client(redirect_uri=redirect_uri) as client:
            token = await client.fetch_token(token_url, grant_type="authorization_code", code=code,
                                             code_verifier=verifier, redirect_uri=redirect_uri)  # fmt: skip
    except _FAILURES as exc:
        raise _failure(exc, where) from None
    return _token_set(token, where, started=started, asked=asked)


async def refresh(token_url: str, reg: ClientRegistration, *, refresh_token: str, asked: tuple[str, ...]) -> TokenSet:
    """A refresh-token grant (the scope is not sent: the grant keeps what was approved)."""
    where = f"the token endpoint at {host_of(token_url)}"
    started = time.time()
    try:
        async with reg.client() as client:
            token = await client.refresh_token(token_url, refresh_token=refresh_token)
    except _FAILURES as exc:
        raise _failure(exc, where) from None
    got = _token_set(token, where, started=started, asked=asked)
    return got if got.refresh_token else TokenSet(got.access_token, refresh_token, got.expires_at, got.scope,
                                                  got.id_token, got.raw)  # fmt: skip


async def revoke(revocation_url: str, reg: ClientRegistration, *, token: str, hint: str) -> None:
    """RFC 7009. Raises ProviderError unless the provider answered 200."""
    where = f"the revocation endpoint at {host_of(revocation_url)}"
    try:
        async with reg.client() as client:
            reply = await client.revoke_token(revocation_url, token=token, token_type_hint=hint)
    except _FAILURES as exc:
        raise _failure(exc, where) from None
    if reply.status_code != 200:
        raise ProviderError(f"{where} answered HTTP {reply.status_code}.", refused=reply.status_code < 500)


class _TooLarge(ValueError):
    pass


async def _get_json(client: AsyncOAuth2Client, url: str) -> tuple[int, Any]:
    """GET ``url``: its status and, on 200, its JSON. Reading stops at MAX_METADATA_BYTES of the
    decoded body (a compressed bomb stops there too); more is :class:`_TooLarge`. The whole
    exchange has PROVIDER_TIMEOUT_SECONDS (a body dripping a byte a second is not read for long)."""
    headers = {"Accept": "application/json"}
    body = bytearray()
    try:
        with anyio.fail_after(PROVIDER_TIMEOUT_SECONDS):
            async with client.stream("GET", url, withhold_token=True, headers=headers) as reply:
                if reply.status_code != 200:
                    return reply.status_code, None
                async for chunk in reply.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_METADATA_BYTES:
                        raise _TooLarge(f"more than {MAX_METADATA_BYTES} bytes")
    except TimeoutError:
        raise httpx2.ReadTimeout(f"no whole answer within {PROVIDER_TIMEOUT_SECONDS:g} s") from None
    try:
        return 200, json.loads(body)
    except RecursionError:  # "[[[[…": nested deeper than the parser goes
        raise ValueError("JSON nested too deeply") from None


async def discover(urls: tuple[str, ...]) -> dict[str, Any] | None:
    """The first of ``urls`` that answers 200 with a JSON object (RFC 8414 / OIDC discovery), or None."""
    async with ClientRegistration("discovery").client() as client:
        for url in urls:
            try:
                _, doc = await _get_json(client, url)
            except _FAILURES:  # not there, too large, not JSON: try the next URL
                continue
            if isinstance(doc, dict):
                return doc
    return None


async def fetch_json(url: str) -> dict[str, Any]:
    """GET a JSON object (a JWKS, a metadata document); ProviderError when it is not one."""
    where = f"{host_of(url)}"
    try:
        async with ClientRegistration("fetch").client() as client:
            status, doc = await _get_json(client, url)
        if status != 200:
            raise ProviderError(f"{where} answered HTTP {status}.", refused=False)
    except _TooLarge:
        raise ProviderError(f"{where} sent more than {MAX_METADATA_BYTES} bytes.", refused=False) from None
    except _FAILURES as exc:
        raise _failure(exc, where) from None
    if not isinstance(doc, dict):
        raise ProviderError(f"{where} did not answer with a JSON object.", refused=False)
    return doc
