"""``codemode connect``'s settings and its three actions: bridge (the default), sign in, sign out."""

from __future__ import annotations

import sys
import threading
import webbrowser
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
)
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._config import is_loopback_host
from ._auth import BridgeAuth, FileStorage, OpenUrl, quiet_sdk_flow_errors
from ._bridge import serve_stdio
from ._errors import ConnectError
from ._http import BridgeHttpClient
from ._tokens import TokenFile, token_path

__all__ = ["ConnectSettings", "bridge", "login", "logout", "open_in_browser", "print_url"]


class ConnectSettings(BaseModel):
    """What ``codemode connect`` needs; every limit named."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(description="the portal server's MCP endpoint, https://host/mcp/<name>")
    client_metadata_url: str | None = Field(
        default=None, description="register by this Client ID Metadata Document (https URL) instead of RFC 7591"
    )
    callback_port: int | None = Field(
        default=None, ge=1024, le=65535,
        description="the redirect port (http://127.0.0.1:PORT/callback); required with client_metadata_url",
    )  # fmt: skip
    open_browser: bool = Field(default=True, description="open the sign-in page in the browser (else print it)")
    token_dir: Path | None = Field(default=None, description="where token files live (default: the config folder)")
    client_name: str = Field(default="codemode connect", min_length=1, max_length=100)
    authorization_timeout: float = Field(default=300.0, ge=10, le=3600, description="seconds to complete a sign-in")
    connect_timeout: float = Field(default=30.0, gt=0, le=600, description="seconds to connect/send")
    read_timeout: float = Field(default=300.0, gt=0, le=3600, description="seconds to wait for an answer")
    max_response_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)
    expiry_margin: float = Field(default=30.0, ge=0, le=600, description="refresh this many seconds early")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be the server's http(s) URL, e.g. https://portal.example.com/mcp/github")
        if parts.username or parts.password or parts.fragment:
            raise ValueError("must not carry a user name, password or fragment")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("must be https:// (plain http only on this machine: tokens would travel in clear)")
        return value

    @field_validator("client_metadata_url")
    @classmethod
    def _metadata_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname or parts.path in ("", "/") or parts.fragment:
            raise ValueError("must be an https:// URL with a path (the document's own URL is its client_id)")
        return value

    @model_validator(mode="after")
    def _cimd_port(self) -> ConnectSettings:
        if self.client_metadata_url and self.callback_port is None:
            raise ValueError(
                "--client-metadata-url needs --callback-port PORT: the port of the redirect URI your document "
                "lists (http://127.0.0.1:PORT/callback)"
            )
        return self

    @property
    def token_file(self) -> TokenFile:
        return TokenFile(self.url, token_path(self.url, self.token_dir))


async def print_url(url: str) -> None:
    print(f"codemode connect: to sign in, open this address in your browser:\n  {url}", file=sys.stderr, flush=True)


async def open_in_browser(url: str) -> None:
    """Print the address (a browser may not open), then open it without waiting for the browser."""
    await print_url(url)
    threading.Thread(target=webbrowser.open, args=(url,), name="codemode-connect-browser", daemon=True).start()


@asynccontextmanager
async def http_client(settings: ConnectSettings, open_url: OpenUrl | None = None) -> AsyncIterator[BridgeHttpClient]:
    quiet_sdk_flow_errors()
    auth = BridgeAuth(
        settings.url, FileStorage(settings.token_file),
        open_url=open_url or (open_in_browser if settings.open_browser else print_url),
        client_name=settings.client_name, client_metadata_url=settings.client_metadata_url,
        callback_port=settings.callback_port, authorization_timeout=settings.authorization_timeout,
        lock_timeout=settings.authorization_timeout + 30, expiry_margin=settings.expiry_margin,
    )  # fmt: skip
    timeout = httpx2.Timeout(settings.connect_timeout, read=settings.read_timeout)
    async with BridgeHttpClient(
        settings.url, max_response_bytes=settings.max_response_bytes, auth=auth, timeout=timeout,
        follow_redirects=False,
    ) as http:  # fmt: skip
        yield http


async def bridge(settings: ConnectSettings, open_url: OpenUrl | None = None) -> None:
    """Serve stdio, forwarding to ``settings.url``, until the local client closes stdin."""
    async with http_client(settings, open_url) as http:
        await serve_stdio(settings.url, http, max_event_bytes=settings.max_response_bytes)


async def login(settings: ConnectSettings, open_url: OpenUrl | None = None) -> str:
    """Sign in now (if the stored token does not already work); returns the server's name."""
    try:
        async with http_client(settings, open_url) as http:
            async with streamable_http_client(settings.url, http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    return (await session.initialize()).server_info.name
    except (MCPError, ExceptionGroup) as exc:  # the bridge's own JSON-RPC errors say what failed
        error = _find(exc, MCPError)
        if error is None:
            raise
        raise ConnectError(str(error).removeprefix("codemode connect: "), code="connect.login") from None


def _find(exc: BaseException, kind: type[MCPError]) -> MCPError | None:
    if isinstance(exc, kind):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _find(inner, kind)
        if found is not None:
            return found
    return None


async def logout(settings: ConnectSettings) -> tuple[bool, bool]:
    """Revoke the stored grant at the portal (RFC 7009) and delete the token file.
    Returns (a file was deleted, the portal confirmed the revocation)."""
    file = settings.token_file
    state = file.load()
    revoked = False
    token = state.tokens.refresh_token or state.tokens.access_token if state.tokens else None
    if token and state.client is not None:
        endpoint = await _revocation_endpoint(settings)
        if endpoint:
            async with BridgeHttpClient(settings.url, max_response_bytes=64 * 1024,
                                        timeout=settings.connect_timeout) as http:  # fmt: skip
                r = await http.post(endpoint, data={"token": token, "client_id": state.client.client_id})
                revoked = r.status_code == 200
    return file.delete(), revoked


async def _revocation_endpoint(settings: ConnectSettings) -> str | None:
    """The portal's revocation endpoint, found the way the sign-in found its token endpoint; only
    one on the issuer's own origin is used (the refresh token is not sent anywhere else)."""
    async with BridgeHttpClient(settings.url, max_response_bytes=256 * 1024, timeout=settings.connect_timeout) as http:
        issuer: str | None = None
        try:
            for url in build_protected_resource_metadata_discovery_urls(None, settings.url):
                r = await http.get(url)
                if r.status_code == 200:
                    servers = r.json().get("authorization_servers") or []
                    issuer = str(servers[0]) if servers else None
                    break
            for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, settings.url):
                r = await http.get(url)
                if r.status_code == 200:
                    meta = r.json()
                    endpoint = meta.get("revocation_endpoint")
                    if not isinstance(endpoint, str) or _origin(endpoint) != _origin(str(meta.get("issuer", ""))):
                        return None
                    return endpoint
        except (httpx2.HTTPError, ValueError, AttributeError):
            return None
    return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()
