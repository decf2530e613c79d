"""The authorization server: authlib's framework-neutral ``AuthorizationServer`` wired to the
portal's store, grants and endpoints. Synchronous; the routes run it on worker threads."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.base import OAuth2Error
from authlib.oauth2.rfc6749 import AuthorizationServer

from .._store import Client
from ._clients import MetadataProblem, OAuthClient
from ._context import OAuthContext
from ._descriptions import Endpoint, plain_error
from ._endpoints import Registration, Revocation
from ._grants import AuthorizationCodeGrant, RefreshTokenGrant, S256Only
from ._requests import OAuthResponse, PortalRequest

__all__ = ["PortalAuthorizationServer", "endpoint_of"]

ENDPOINTS: dict[str, Endpoint] = {"/authorize": "authorize", "/token": "token", "/revoke": "revoke",
                                  "/register": "register"}  # fmt: skip


def endpoint_of(request: Any) -> Endpoint | None:
    """Which endpoint an OAuth request was sent to (its path under the issuer)."""
    path = urlsplit(str(getattr(request, "uri", "") or "")).path.rstrip("/")
    return next((e for p, e in ENDPOINTS.items() if path.endswith(p)), None)


class PortalAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, ctx: OAuthContext) -> None:
        super().__init__(scopes_supported=None)
        self.ctx = ctx
        self.register_grant(AuthorizationCodeGrant, [S256Only(required=True)])
        self.register_grant(RefreshTokenGrant)
        self.register_endpoint(Revocation)
        if ctx.settings.dynamic_registration:
            self.register_endpoint(Registration)

    def lookup_client(self, client_id: str, *, fresh: bool) -> OAuthClient | None:
        """The client, or None. ``MetadataProblem`` when a metadata document cannot be used."""
        found: Client | None = self.ctx.find_client(client_id, fresh=fresh)
        return OAuthClient(found) if found is not None else None

    def query_client(self, client_id: str) -> OAuthClient | None:
        try:
            return self.lookup_client(client_id, fresh=False)
        except MetadataProblem:
            return None

    def save_token(self, token: Any, request: Any) -> None:  # the grants store their own tokens
        raise NotImplementedError

    def create_oauth2_request(self, request: PortalRequest) -> PortalRequest:
        return request

    def create_json_request(self, request: Any) -> Any:
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> OAuthResponse:
        return OAuthResponse(status, body, list(headers))

    def handle_error_response(self, request: Any, error: OAuth2Error) -> OAuthResponse:
        """Every OAuth error authlib answers goes out with a plain-English description."""
        plain_error(error, endpoint_of(request))
        response: OAuthResponse = super().handle_error_response(request, error)
        return response

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None
