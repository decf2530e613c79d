"""Grants on authlib: authorization code with PKCE S256 (required), and rotating refresh tokens.

* A code is single-use: taking it is atomic; a second use (replay) revokes the whole grant.
* A refresh token is single-use: rotation is atomic; reusing a rotated one revokes the whole grant.
* Every token is bound to the grant's server and resource; ``resource`` at the token endpoint must
  equal the grant's (``invalid_target`` otherwise). A refresh may narrow the scopes, never widen.
* Tokens are opaque random strings; only their SHA-256 hashes are stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc7636 import CodeChallenge

from .._crypto import ACCESS_PREFIX, CODE_PREFIX, REFRESH_PREFIX, new_id, new_token, token_hash
from .._errors import InvalidTargetError
from .._scopes import parse_scope
from .._store import AuthCode, Grant, TokenRecord, User
from ._context import OAuthContext
from ._requests import PortalRequest

__all__ = ["AuthorizationCodeGrant", "RefreshTokenGrant", "S256Only", "issue_tokens"]

log = logging.getLogger("codemode.portal.oauth")
CLIENT_AUTH = ["client_secret_basic", "client_secret_post", "none"]


class S256Only(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256 only, required for every client (authlib's default also accepts ``plain``
    and lets a request without a challenge through)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256 (plain is not accepted).")
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge_method(self, authorization_code: Any) -> str:
        return "S256"


@dataclass
class _CodeView:
    """authlib's view of a stored code."""

    record: AuthCode

    @property
    def code_challenge(self) -> str:
        return self.record.code_challenge

    def get_redirect_uri(self) -> str:
        return self.record.redirect_uri

    def get_scope(self) -> str:
        return " ".join(self.record.scopes)


@dataclass
class _RefreshView:
    record: TokenRecord

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.record.client_id)

    def get_scope(self) -> str:
        return " ".join(self.record.scopes)


def issue_tokens(
    ctx: OAuthContext, grant: Grant, scopes: tuple[str, ...], *, refresh: bool, refresh_scopes: tuple[str, ...]
) -> tuple[dict[str, Any], tuple[TokenRecord, ...]]:
    """A token response body and the records to store (hashes only)."""
    s, now = ctx.settings, ctx.now()
    access = new_token(ACCESS_PREFIX)

    def record(secret: str, kind: str, lifetime: int, scope: tuple[str, ...]) -> TokenRecord:
        return TokenRecord(
            hash=token_hash(secret), kind=kind, grant_id=grant.id, client_id=grant.client_id,  # type: ignore[arg-type]
            user_id=grant.user_id, server=grant.server, resource=grant.resource, scopes=scope, created_at=now,
            expires_at=now + lifetime,
        )  # fmt: skip

    body: dict[str, Any] = {
        "access_token": access, "token_type": "Bearer", "expires_in": s.access_token_seconds, "scope": " ".join(scopes),
    }  # fmt: skip
    records = [record(access, "access", s.access_token_seconds, scopes)]
    if refresh:
        secret = new_token(REFRESH_PREFIX)
        body["refresh_token"] = secret
        records.append(record(secret, "refresh", s.refresh_token_seconds, refresh_scopes))
    return body, tuple(records)


def _check_resource(request: PortalRequest, resource: str) -> None:
    given = request.values("resource")
    if len(given) > 1 or (given and given[0] != resource):
        raise InvalidTargetError("The resource must be the one this grant was issued for.")


def _enabled(user: User | None) -> User | None:
    """A disabled user's codes and refresh tokens get no tokens (``invalid_grant``), even one that
    raced the operator's ``user disable`` (which also revokes every grant)."""
    return user if user is not None and not user.disabled else None


def _replayed(ctx: OAuthContext, grant_id: str, what: str) -> None:
    grant = ctx.store.get_grant(grant_id)
    ctx.store.revoke_grant(grant_id, ctx.now())
    log.warning("%s replayed: grant %s revoked", what, grant_id)
    if grant is not None:
        ctx.audit.record("replay", user_id=grant.user_id, client_id=grant.client_id, server=grant.server,
                         status="grant_revoked", detail=f"{what} used twice")  # fmt: skip


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH
    request: PortalRequest

    @property
    def ctx(self) -> OAuthContext:
        return self.server.ctx  # type: ignore[no-any-return]

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        try:
            target = self.ctx.resolve_target(self.request.values("resource"), self.request.payload.scope)
        except (InvalidTargetError, InvalidScopeError) as exc:
            exc.redirect_uri = redirect_uri
            raise
        self.request.portal_server, self.request.portal_resource = target.server, target.resource
        self.request.portal_requested = target.scopes
        return redirect_uri

    def generate_authorization_code(self) -> str:
        return new_token(CODE_PREFIX)

    def save_authorization_code(self, code: str, request: PortalRequest) -> None:
        ctx, user = self.ctx, request.user
        assert user is not None and request.portal_server is not None and request.portal_resource is not None
        approved = request.portal_approved if request.portal_approved is not None else request.portal_requested
        now = ctx.now()
        grant = Grant(id=new_id(), user_id=user.id, client_id=request.client.get_client_id(),
                      server=request.portal_server, resource=request.portal_resource, scopes=approved,
                      created_at=now)  # fmt: skip
        ctx.store.create_grant(grant)
        ctx.store.save_code(AuthCode(
            hash=token_hash(code), grant_id=grant.id, client_id=grant.client_id,
            redirect_uri=request.payload.redirect_uri or request.client.get_default_redirect_uri(),
            code_challenge=request.payload.data["code_challenge"], resource=grant.resource, scopes=approved,
            expires_at=now + ctx.settings.authorization_code_seconds,
        ))  # fmt: skip
        ctx.audit.record("consent", user_id=user.id, client_id=grant.client_id, server=grant.server,
                         status="approved", detail=" ".join(approved))  # fmt: skip

    def query_authorization_code(self, code: str, client: Any) -> _CodeView | None:
        ctx = self.ctx
        found = ctx.store.find_code(token_hash(code))
        if found is None or found.client_id != client.get_client_id():
            return None
        if found.used_at is not None:
            _replayed(ctx, found.grant_id, "authorization code")
            return None
        if found.expires_at <= ctx.now():
            return None
        return _CodeView(found)

    def validate_token_request(self) -> None:
        super().validate_token_request()  # client auth, code, redirect_uri, then PKCE (hook)
        _check_resource(self.request, self.request.authorization_code.record.resource)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        ctx, code = self.ctx, self.request.authorization_code.record
        if not ctx.store.take_code(code.hash, ctx.now()):  # lost a race with another use: a replay
            _replayed(ctx, code.grant_id, "authorization code")
            raise InvalidGrantError("The authorization code was already used.")
        grant = ctx.store.get_grant(code.grant_id)
        if grant is None or grant.revoked_at is not None:
            raise InvalidGrantError("The grant was revoked.")
        if _enabled(ctx.store.get_user(grant.user_id)) is None:
            raise InvalidGrantError("The user of this grant may no longer sign in.")
        client = self.request.client
        body, records = issue_tokens(ctx, grant, code.scopes, refresh=client.check_grant_type("refresh_token"),
                                     refresh_scopes=code.scopes)  # fmt: skip
        ctx.store.save_tokens(*records)
        ctx.audit.record("token_issued", user_id=grant.user_id, client_id=grant.client_id, server=grant.server,
                         status="ok", detail=body["scope"])  # fmt: skip
        return 200, body, self.TOKEN_RESPONSE_HEADER

    def authenticate_user(self, authorization_code: _CodeView) -> User | None:
        grant = self.ctx.store.get_grant(authorization_code.record.grant_id)
        return _enabled(self.ctx.store.get_user(grant.user_id)) if grant is not None else None


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH
    INCLUDE_NEW_REFRESH_TOKEN = True
    request: PortalRequest

    @property
    def ctx(self) -> OAuthContext:
        return self.server.ctx  # type: ignore[no-any-return]

    def authenticate_refresh_token(self, refresh_token: str) -> _RefreshView | None:
        ctx = self.ctx
        view = ctx.store.find_token(token_hash(refresh_token))
        if view is None or view.token.kind != "refresh":
            return None
        if view.token.used_at is not None and not view.grant_revoked:
            _replayed(ctx, view.token.grant_id, "refresh token")
            return None
        if not view.usable(ctx.now()):
            return None
        return _RefreshView(view.token)

    def validate_token_request(self) -> None:
        super().validate_token_request()
        _check_resource(self.request, self.request.refresh_token.record.resource)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        ctx, old = self.ctx, self.request.refresh_token.record
        grant = ctx.store.get_grant(old.grant_id)
        if grant is None or grant.revoked_at is not None:
            raise InvalidGrantError("The grant was revoked.")
        if _enabled(ctx.store.get_user(grant.user_id)) is None:
            raise InvalidGrantError("The user of this grant may no longer sign in.")
        requested = parse_scope(self.request.payload.scope) or old.scopes  # narrowing checked by authlib
        body, records = issue_tokens(ctx, grant, requested, refresh=True, refresh_scopes=old.scopes)
        if not ctx.store.rotate_refresh(old.hash, records, ctx.now()):
            _replayed(ctx, old.grant_id, "refresh token")
            raise InvalidGrantError("The refresh token was already used.")
        ctx.audit.record("token_refreshed", user_id=grant.user_id, client_id=grant.client_id, server=grant.server,
                         status="ok", detail=body["scope"])  # fmt: skip
        return 200, body, self.TOKEN_RESPONSE_HEADER

    def authenticate_user(self, refresh_token: _RefreshView) -> User | None:
        return _enabled(self.ctx.store.get_user(refresh_token.record.user_id))
