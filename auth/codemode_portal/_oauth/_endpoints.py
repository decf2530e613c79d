"""RFC 7009 revocation and RFC 7591 registration, on authlib's endpoint classes."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from authlib.consts import default_json_headers
from authlib.oauth2.rfc6749.errors import AccessDeniedError, InvalidRequestError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint, InvalidClientMetadataError, InvalidRedirectURIError

from .._crypto import CLIENT_SECRET_PREFIX, new_token, token_hash
from .._store import TokenView
from ._clients import MetadataProblem, client_from_metadata, validate_metadata
from ._context import OAuthContext
from ._descriptions import safe_description
from ._grants import CLIENT_AUTH
from ._requests import PortalJsonRequest

__all__ = ["Registration", "Revocation"]

log = logging.getLogger("codemode.portal.oauth")
REGISTRATION_WINDOW = 3600.0


@dataclass
class _TokenView:
    view: TokenView

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.view.token.client_id)


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    """Revoking a refresh token revokes its whole grant (every token of it); revoking an access
    token revokes that token. Unknown or already dead tokens get 200, as RFC 7009 §2.2 says."""

    CLIENT_AUTH_METHODS = CLIENT_AUTH

    @property
    def ctx(self) -> OAuthContext:
        return self.server.ctx  # type: ignore[no-any-return]

    def query_token(self, token_string: str, token_type_hint: str | None) -> _TokenView | None:
        view = self.ctx.store.find_token(token_hash(token_string))
        return _TokenView(view) if view is not None else None

    def revoke_token(self, token: _TokenView, request: Any) -> None:
        ctx, rec = self.ctx, token.view.token
        now = ctx.now()
        if rec.kind == "refresh":
            ctx.store.revoke_grant(rec.grant_id, now)
            what = "grant_revoked"
        else:
            ctx.store.revoke_token(rec.hash, now)
            what = "token_revoked"
        ctx.audit.record(what, user_id=rec.user_id, client_id=rec.client_id, server=rec.server,
                         status="ok", detail=f"{rec.kind} token revoked by the client")  # fmt: skip


class Registration(ClientRegistrationEndpoint):  # type: ignore[misc]
    """Open dynamic registration (rate-limited per client address). Public clients
    (``token_endpoint_auth_method: none``) get no secret; a confidential client's secret is shown
    once and stored as a hash."""

    @property
    def ctx(self) -> OAuthContext:
        return self.server.ctx  # type: ignore[no-any-return]

    def create_endpoint_request(self, request: PortalJsonRequest) -> PortalJsonRequest:
        return request

    def authenticate_token(self, request: PortalJsonRequest) -> bool:
        ctx = self.ctx
        key = f"register:ip:{request.portal_address[:100]}"
        now = ctx.now()
        if ctx.store.count_rate_events(key, now - REGISTRATION_WINDOW) >= ctx.settings.registrations_per_ip_hour:
            raise AccessDeniedError(
                "Too many client registrations from this address; try again later.", status_code=429
            )
        ctx.store.add_rate_event(key, now)
        return True

    def extract_client_metadata(self, request: PortalJsonRequest) -> dict[str, Any]:
        try:
            meta = validate_metadata(request.payload.data, max_redirect_uris=self.ctx.settings.max_redirect_uris)
        except MetadataProblem as exc:
            cls = InvalidRedirectURIError if exc.field == "redirect_uris" else InvalidClientMetadataError
            raise cls(safe_description(str(exc))) from None
        request.portal_metadata = meta  # type: ignore[attr-defined]
        return meta.model_dump(exclude_none=True)

    def get_server_metadata(self) -> dict[str, Any]:
        return {}

    def generate_client_id(self, request: PortalJsonRequest) -> str:
        return "cmp_client_" + secrets.token_urlsafe(18)

    def generate_client_secret(self, request: PortalJsonRequest) -> str | None:
        meta = getattr(request, "portal_metadata", None)
        if meta is None or meta.token_endpoint_auth_method == "none":  # noqa: S105 - a method name
            return None
        return new_token(CLIENT_SECRET_PREFIX)

    def generate_client_info(self, request: PortalJsonRequest) -> dict[str, Any]:
        info: dict[str, Any] = super().generate_client_info(request)
        if info.get("client_secret") is None:
            info.pop("client_secret", None)
            info.pop("client_secret_expires_at", None)
        return info

    def save_client(
        self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: PortalJsonRequest
    ) -> Any:
        meta = request.portal_metadata  # type: ignore[attr-defined]
        secret = client_info.get("client_secret")
        client = client_from_metadata(client_info["client_id"], meta, kind="dcr",
                                      secret_hash=token_hash(secret) if secret else None)  # fmt: skip
        self.ctx.store.save_client(client)
        self.ctx.audit.record("client_registered", client_id=client.client_id, status="ok",
                              detail=f"{client.name[:100]} ({client.auth_method})")  # fmt: skip
        return client

    def create_registration_response(self, request: PortalJsonRequest) -> tuple[int, Any, list[tuple[str, str]]]:
        if not isinstance(request.payload.data, dict):
            raise InvalidRequestError("The registration request must be a JSON object.")
        status, body, _ = super().create_registration_response(request)
        return status, body, default_json_headers
