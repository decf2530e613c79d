"""Sign-in delegated to an external OpenID Connect provider (``[portal.oidc]``), through authlib's
client: discovery, authorization code + PKCE S256, ``state`` bound to the browser session,
``nonce``, and an ID token checked for signature (the provider's JWKS, asymmetric algorithms only),
``iss``, ``aud``, ``azp``, ``exp``/``iat``, ``nonce`` and ``at_hash``.

The provider's user is mapped to a portal user by (issuer, ``sub``), never by name or e-mail (a
name collision cannot take over a local account). An unknown (issuer, sub) creates a portal user
when ``create_users = true`` (named after ``username_claim``, made unique), or is refused: then an
operator maps it beforehand (``codemode portal oidc link NAME SUBJECT``).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from ._audit import AuditLog
from ._box import SealError, SecretBox
from ._crypto import new_id, token_hash
from ._errors import PortalError, StoreConflict
from ._oauthclient import (
    ClientRegistration,
    ProviderError,
    authorization_url,
    discover,
    exchange_code,
    fetch_json,
    host_of,
)
from ._provider_config import OidcSettings, check_provider_url
from ._store import AsyncStore, ExternalIdentity, PendingFlow, User
from ._users import USER_NAME

__all__ = ["LOGIN_FLOW_SECONDS", "OIDC_PASSWORD_HASH", "OidcLogin", "OidcRefused"]

log = logging.getLogger("codemode.portal.oidc")

LOGIN_FLOW_SECONDS = 600
LOGIN_STARTS_PER_WINDOW = 30  # pending sign-ins one address may start per window (each is a stored row)
LOGIN_START_WINDOW_SECONDS = 600
METADATA_SECONDS = 3600
JWKS_REFETCH_SECONDS = 60  # an unknown key id fetches the JWKS again, at most this often
MAX_STATE_CHARS = 200
SAFE_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
OIDC_PASSWORD_HASH = "!oidc"  # noqa: S105 - users made by OIDC sign-in have no password (no argon2 hash)
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.@+-]+")


class OidcRefused(PortalError):
    """A sign-in through the provider that did not succeed; the message is safe to show."""

    code = "portal.login.oidc"


@dataclass
class _Metadata:
    doc: dict[str, Any]
    fetched: float
    jwks: KeySet | None = None
    jwks_fetched: float = 0.0


def _origin_ok(url: object, what: str) -> str:
    if not isinstance(url, str):
        raise OidcRefused(f"The provider's metadata has no {what}.")
    try:
        return check_provider_url(url)
    except ValueError as exc:
        raise OidcRefused(f"The provider's {what} {exc}.") from None


class OidcLogin:
    """The ``LoginMethod`` (``key``, ``label``, ``start_url``) and what its pages do."""

    key = "oidc"
    start_url = "/login/oidc"

    def __init__(
        self,
        settings: OidcSettings,
        astore: AsyncStore,
        box: SecretBox,
        audit: AuditLog,
        *,
        portal_issuer: str,
        client_secret: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.astore = astore
        self.box = box
        self.audit = audit
        self.portal_issuer = portal_issuer
        self.registration = ClientRegistration(settings.client_id, client_secret, settings.auth_method)
        self.clock = clock
        self._meta: _Metadata | None = None

    @property
    def label(self) -> str:
        return self.settings.button_label

    @property
    def callback_url(self) -> str:
        return f"{self.portal_issuer}/login/oidc/callback"

    @property
    def host(self) -> str:
        return host_of(self.settings.issuer)

    # -- discovery --------------------------------------------------------------------------
    async def metadata(self) -> _Metadata:
        meta = self._meta
        if meta is not None and meta.fetched + METADATA_SECONDS > self.clock():
            return meta
        url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await discover((url,))
        if doc is None:
            raise OidcRefused(f"The sign-in provider {self.host} cannot be reached right now. Try again later.")
        if doc.get("issuer") != self.settings.issuer:
            log.warning("OIDC discovery at %s names issuer %r, not the configured one", url, doc.get("issuer"))
            raise OidcRefused(f"The sign-in provider {self.host} is misconfigured (its issuer differs).")
        for what in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            _origin_ok(doc.get(what), what)
        self._meta = _Metadata(doc, self.clock())
        return self._meta

    async def _keys(self, meta: _Metadata, *, again: bool = False) -> KeySet:
        if meta.jwks is not None and not (again and meta.jwks_fetched + JWKS_REFETCH_SECONDS <= self.clock()):
            return meta.jwks
        try:
            doc = await fetch_json(str(meta.doc["jwks_uri"]))
        except ProviderError as exc:
            raise OidcRefused(f"The sign-in provider's keys cannot be fetched: {exc.message}") from None
        try:
            keys = KeySet.import_key_set(doc)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError):
            raise OidcRefused(f"The sign-in provider {self.host} published unusable keys.") from None
        meta.jwks, meta.jwks_fetched = keys, self.clock()
        return keys

    def _algorithms(self, meta: _Metadata) -> list[str]:
        offered = meta.doc.get("id_token_signing_alg_values_supported")
        if not isinstance(offered, list) or not offered:
            offered = ["RS256"]
        return [a for a in SAFE_ALGORITHMS if a in offered] or ["RS256"]

    # -- the flow --------------------------------------------------------------------------------
    async def start(self, session_value: str, next_url: str, address: str) -> str:
        store = self.astore.store
        key = f"oidc_start:ip:{address[:100]}"
        now = self.clock()
        if await self.astore.call(store.count_rate_events, key, now - LOGIN_START_WINDOW_SECONDS) >= (
            LOGIN_STARTS_PER_WINDOW
        ):
            raise OidcRefused("Too many sign-in attempts from your address. Wait a few minutes, then try again.")
        await self.astore.call(store.add_rate_event, key, now)
        meta = await self.metadata()
        state, verifier, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(48), secrets.token_urlsafe(24)
        now = self.clock()
        state_hash = token_hash(state)
        flow = PendingFlow(
            state_hash=state_hash, purpose="login", session_hash=token_hash(session_value),
            verifier=self.box.seal(verifier, context=f"flow:{state_hash}:verifier"), created_at=now,
            expires_at=now + LOGIN_FLOW_SECONDS, nonce=nonce, next_url=next_url,
        )  # fmt: skip
        await self.astore.call(self.astore.store.save_pending_flow, flow, now)
        return authorization_url(str(meta.doc["authorization_endpoint"]), self.registration,
                                 redirect_uri=self.callback_url, scopes=self.settings.scopes, state=state,
                                 verifier=verifier, extra={"nonce": nonce})  # fmt: skip

    def _refuse(self, status: str, message: str, detail: str | None = None) -> OidcRefused:
        self.audit.record("login_failed", status=status[:64], detail=f"oidc {self.host}" + (f": {detail}" if detail
                                                                                           else ""))  # fmt: skip
        return OidcRefused(message)

    async def finish(self, session_value: str, params: Mapping[str, str]) -> tuple[User, str]:
        """The portal user the provider signed in, and where to go next. OidcRefused otherwise."""
        state = params.get("state", "")
        if not state or len(state) > MAX_STATE_CHARS:
            raise self._refuse("oidc_no_state", "The sign-in answer has no valid state. Sign in again.")
        state_hash = token_hash(state)
        flow = await self.astore.call(self.astore.store.take_pending_flow, state_hash, self.clock())
        if flow is None:
            raise self._refuse("oidc_unknown_state", "This sign-in attempt expired or was already used. Sign in again.")
        if flow.purpose != "login" or flow.session_hash != token_hash(session_value) or flow.nonce is None:
            raise self._refuse("oidc_state_mismatch", "This sign-in answer belongs to another browser session. "
                               "Sign in again.")  # fmt: skip
        meta = await self.metadata()
        if meta.doc.get("authorization_response_iss_parameter_supported") is True and params.get(
            "iss") != self.settings.issuer:  # fmt: skip
            raise self._refuse("oidc_issuer_mismatch", "The sign-in answer did not come from the expected provider.")
        if "error" in params or "code" not in params:
            error = (params.get("error") or "no_code")[:60]
            raise self._refuse(f"oidc_{error}", f"{self.host} did not sign you in ({error}).")
        try:
            verifier = self.box.open(flow.verifier, context=f"flow:{state_hash}:verifier")
        except SealError:
            raise self._refuse(
                "oidc_unreadable_flow", "This sign-in attempt cannot be completed. Sign in again."
            ) from None
        try:
            tokens = await exchange_code(str(meta.doc["token_endpoint"]), self.registration, code=params["code"],
                                         verifier=verifier, redirect_uri=self.callback_url,
                                         asked=self.settings.scopes)  # fmt: skip
        except ProviderError as exc:
            raise self._refuse(f"oidc_{exc.error or 'unavailable'}", f"Signing in failed: {exc.message}") from None
        if not tokens.id_token:
            raise self._refuse("oidc_no_id_token", f"{self.host} answered without an ID token.")
        claims = await self._claims(meta, tokens.id_token, nonce=flow.nonce, access_token=tokens.access_token)
        user = await self._user_for(claims)
        self.audit.record("login", user_id=user.id, status="ok", detail=f"oidc {self.host}")
        return user, flow.next_url or "/account"

    async def _claims(self, meta: _Metadata, id_token: str, *, nonce: str, access_token: str) -> CodeIDToken:
        algorithms = self._algorithms(meta)
        try:
            try:
                token = jwt.decode(id_token, await self._keys(meta), algorithms=algorithms)
            except InvalidKeyIdError:  # the provider rotated its keys
                token = jwt.decode(id_token, await self._keys(meta, again=True), algorithms=algorithms)
            options = {
                "iss": {"essential": True, "value": self.settings.issuer},
                "aud": {"essential": True, "value": self.settings.client_id},
                "sub": {"essential": True},
                "exp": {"essential": True},
                "iat": {"essential": True},
            }
            params = {"nonce": nonce, "client_id": self.settings.client_id, "access_token": access_token}
            claims = CodeIDToken(token.claims, token.header, options, params)
            claims.validate(now=int(self.clock()), leeway=self.settings.leeway_seconds)
        except (JoseError, ValueError) as exc:
            raise self._refuse("oidc_bad_id_token", "The sign-in provider's ID token was not valid.",
                               type(exc).__name__) from None  # fmt: skip
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 0 < len(sub) <= 255:
            raise self._refuse("oidc_bad_id_token", "The sign-in provider's ID token names no usable subject.")
        return claims

    async def _user_for(self, claims: Mapping[str, Any]) -> User:
        store = self.astore.store
        issuer, sub = self.settings.issuer, str(claims["sub"])
        found = await self.astore.call(store.find_external_identity, issuer, sub)
        now = self.clock()
        if found is not None:
            user = await self.astore.call(store.get_user, found.user_id)
            if user is None or user.disabled:
                raise self._refuse("oidc_disabled", "Your portal account is disabled.")
            await self.astore.call(store.touch_external_identity, issuer, sub, now)
            return user
        if not self.settings.create_users:
            raise self._refuse("oidc_unknown_user", f"No portal account is linked to your {self.host} account. "
                               "Ask an administrator to add you.", f"sub {sub[:64]!r}")  # fmt: skip
        allowed = self.settings.allowed_email_domains
        if allowed:
            email = claims.get("email")
            domain = email.rsplit("@", 1)[1].lower() if isinstance(email, str) and "@" in email else ""
            if claims.get("email_verified") is not True or domain not in allowed:
                why = "(no verified e-mail address in an allowed domain)."
                raise self._refuse("oidc_domain", f"Your {self.host} account may not open a portal account here {why}",
                                   f"sub {sub[:64]!r}")  # fmt: skip
        user = await self._create_user(claims, now)
        try:
            await self.astore.call(store.add_external_identity, ExternalIdentity(issuer, sub, user.id, now, now))
        except StoreConflict:  # a concurrent first sign-in of the same person won: use that user
            again = await self.astore.call(store.find_external_identity, issuer, sub)
            other = await self.astore.call(store.get_user, again.user_id) if again else None
            if other is None:
                raise
            return other
        self.audit.record("user_created", user_id=user.id, status="ok", detail=f"oidc {self.host} as {user.name}")
        return user

    async def _create_user(self, claims: Mapping[str, Any], now: float) -> User:
        wanted = claims.get(self.settings.username_claim)
        if not isinstance(wanted, str) or not wanted.strip():
            email = claims.get("email")
            wanted = email.split("@", 1)[0] if isinstance(email, str) else "user"
        base = _NAME_CHARS.sub("-", wanted).strip("-._@+")[:56] or "user"
        if not USER_NAME.fullmatch(base):
            base = f"user-{base}"[:56]
        for n in range(50):
            name = base if n == 0 else f"{base}-{n + 1}"
            user = User(id=new_id(), name=name, password_hash=OIDC_PASSWORD_HASH, created_at=now)
            try:
                await self.astore.call(self.astore.store.create_user, user)
            except StoreConflict:
                continue
            return user
        user = User(id=new_id(), name=f"{base[:40]}-{secrets.token_hex(4)}", password_hash=OIDC_PASSWORD_HASH,
                    created_at=now)  # fmt: skip
        await self.astore.call(self.astore.store.create_user, user)
        return user
