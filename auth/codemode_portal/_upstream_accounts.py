"""What a user does with their own upstream credentials on the portal's pages: paste an API key,
link an account through the API's OAuth authorization-code flow, remove either.

Linking (authlib's client): ``start_link`` stores a *pending flow* (state hash, the PKCE verifier
sealed, bound to the browser session and the user) and returns the provider's authorization URL;
``finish_link`` takes that flow exactly once at ``/upstream/<name>/callback`` (a replayed or
forged callback finds nothing, or a flow of another session/user/server, and is refused), checks
RFC 9207 ``iss`` when the provider advertises it, exchanges the code with the verifier, and
stores the tokens sealed. ``remove`` deletes the credential and, for a linked account, revokes its
tokens at the provider (RFC 7009) when it has a revocation endpoint (configured, or found in its
RFC 8414 / OpenID metadata).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from codemode._scrub import MIN_SUBSTRING_LENGTH

from ._audit import AuditLog
from ._box import SealError, SecretBox
from ._crypto import token_hash
from ._errors import PortalError
from ._oauthclient import ProviderError, authorization_url, discover, exchange_code, host_of, revoke
from ._store import AsyncStore, PendingFlow, UpstreamCredential
from ._upstream_plan import LinkOption, PerUserPlan
from ._upstream_sources import seal_context

__all__ = [
    "LINK_FLOW_SECONDS",
    "MAX_PASTE_CHARS",
    "REMOVED",
    "CredentialView",
    "LinkError",
    "UpstreamAccounts",
    "check_paste",
    "flow_context",
]

log = logging.getLogger("codemode.portal.upstream")

LINK_FLOW_SECONDS = 600  # from "Link" to the provider's callback
LINK_STARTS_PER_WINDOW = 20  # pending flows one user may start per window (each is a stored row)
LINK_START_WINDOW_SECONDS = 600
MAX_PASTE_CHARS = 8_000
MAX_STATE_CHARS = 200
METADATA_SECONDS = 3600  # provider metadata (revocation endpoint, issuer) is fetched again after this
REMOVED = {
    "none": "There was nothing to remove.",
    "removed": "Removed.",
    "revoked": "Unlinked, and the provider revoked the portal's access.",
    "not_revocable": "Unlinked. The provider offers no revocation: remove the portal's access in your account "
                     "settings there too.",
    "failed": "Unlinked here, but revoking at the provider failed: remove the portal's access in your account "
              "settings there.",
}  # fmt: skip


class LinkError(PortalError):
    """A paste, link or callback that did not work; the message is safe to show on the page."""

    code = "portal.upstream.link"


@dataclass(frozen=True)
class CredentialView:
    """What the account page shows of one credential: never the secret."""

    server: str
    kind: str
    scheme: str
    status: str
    scopes: tuple[str, ...]
    created_at: float
    updated_at: float
    expires_at: float | None
    renewable: bool


def flow_context(state_hash: str) -> str:
    return f"flow:{state_hash}:verifier"


def check_paste(value: str, *, basic: bool) -> str:
    """A pasted credential, trimmed; LinkError when it cannot be one (the value is never echoed)."""
    value = value.strip()
    if not value:
        raise LinkError("Paste the credential first.")
    if len(value) > MAX_PASTE_CHARS:
        raise LinkError(f"That is longer than any credential ({MAX_PASTE_CHARS} characters at most).")
    if any(not 0x20 <= ord(c) <= 0x7E for c in value):
        raise LinkError("A credential is printable ASCII on one line; this one has other characters.")
    if basic and ":" not in value:
        raise LinkError("Give the user name and password as user:password.")
    secret = value.split(":", 1)[1] if basic else value
    if len(secret) < MIN_SUBSTRING_LENGTH:
        # shorter secrets cannot be recognised (and scrubbed) in what the upstream sends back
        raise LinkError(f"That is too short to be a credential ({MIN_SUBSTRING_LENGTH} characters at least).")
    return value


class UpstreamAccounts:
    def __init__(
        self,
        astore: AsyncStore,
        box: SecretBox,
        plans: Mapping[str, PerUserPlan],
        audit: AuditLog,
        *,
        issuer: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.astore = astore
        self.box = box
        self.plans = dict(plans)
        self.audit = audit
        self.issuer = issuer
        self.clock = clock
        self._metadata: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def callback_url(self, server: str) -> str:
        return f"{self.issuer}/upstream/{server}/callback"

    def plan(self, server: str) -> PerUserPlan:
        plan = self.plans.get(server)
        if plan is None:
            raise LinkError(f"There is no per-user server {server!r}.")
        return plan

    async def views(self, user_id: str) -> dict[str, CredentialView]:
        rows = await self.astore.call(self.astore.store.list_upstream_credentials, user_id=user_id)
        return {
            c.server: CredentialView(c.server, c.kind, c.scheme, c.status, c.scopes, c.created_at, c.updated_at,
                                     c.expires_at, c.refresh is not None)
            for c in rows if c.server in self.plans
        }  # fmt: skip

    # -- paste -------------------------------------------------------------------------------
    async def paste(self, user_id: str, server: str, scheme: str, value: str) -> None:
        plan = self.plan(server)
        option = plan.paste_option(scheme)
        if option is None:
            raise LinkError(f"Server {server} does not take a pasted credential of that kind.")
        value = check_paste(value, basic=option.basic)
        now = self.clock()
        old = await self.astore.call(self.astore.store.get_upstream_credential, user_id, server)
        cred = UpstreamCredential(
            user_id=user_id, server=server, kind="key", scheme=scheme,
            secret=self.box.seal(value, context=seal_context(user_id, server, "secret")),
            created_at=now, updated_at=now, version=(old.version + 1) if old else 1,
        )  # fmt: skip
        await self.astore.call(self.astore.store.put_upstream_credential, cred)
        self.audit.record("upstream_key_saved", user_id=user_id, server=server, status="ok",
                          detail=f"scheme {scheme}" + (", replaced a linked account" if old and old.kind == "oauth"
                                                       else ""))  # fmt: skip
        if old is not None and old.kind == "oauth":
            await self._revoke(plan, old)

    # -- link --------------------------------------------------------------------------------
    def _link(self, plan: PerUserPlan) -> LinkOption:
        if plan.link is None:
            raise LinkError(f"Server {plan.server} has no account linking configured.")
        return plan.link

    async def start_link(self, user_id: str, session_value: str, server: str) -> str:
        """Store a pending flow bound to this session and user; the provider URL to redirect to."""
        plan = self.plan(server)
        link = self._link(plan)
        store = self.astore.store
        now = self.clock()
        key = f"link_start:user:{user_id}"
        if await self.astore.call(store.count_rate_events, key, now - LINK_START_WINDOW_SECONDS) >= (
            LINK_STARTS_PER_WINDOW
        ):
            raise LinkError("Too many link attempts in a short time. Wait a few minutes, then try again.")
        await self.astore.call(store.add_rate_event, key, now)
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        now = self.clock()
        state_hash = token_hash(state)
        flow = PendingFlow(
            state_hash=state_hash, purpose="link", session_hash=token_hash(session_value),
            verifier=self.box.seal(verifier, context=flow_context(state_hash)), created_at=now,
            expires_at=now + LINK_FLOW_SECONDS, server=server, user_id=user_id,
        )  # fmt: skip
        await self.astore.call(self.astore.store.save_pending_flow, flow, now)
        return authorization_url(link.authorization_url, link.registration, redirect_uri=self.callback_url(server),
                                 scopes=link.scopes, state=state, verifier=verifier,
                                 extra=link.authorize_params)  # fmt: skip

    async def finish_link(self, user_id: str, session_value: str, server: str, params: Mapping[str, str]) -> None:
        """Complete a link from the provider's redirect (``params``: its query). LinkError when refused."""
        plan = self.plan(server)
        link = self._link(plan)
        state = params.get("state", "")
        if not state or len(state) > MAX_STATE_CHARS:
            raise LinkError("The provider's answer has no valid state. Start linking again from this page.")
        now = self.clock()
        state_hash = token_hash(state)
        flow = await self.astore.call(self.astore.store.take_pending_flow, state_hash, now)
        if flow is None:
            self.audit.record("upstream_link_failed", user_id=user_id, server=server, status="unknown_state")
            raise LinkError("This link attempt expired or was already used. Start linking again from this page.")
        if (flow.purpose != "link" or flow.server != server or flow.user_id != user_id
                or flow.session_hash != token_hash(session_value)):  # fmt: skip
            self.audit.record("upstream_link_failed", user_id=user_id, server=server, status="state_mismatch")
            raise LinkError("This answer belongs to a link started elsewhere (another session, user or server). "
                            "Start linking again from this page.")  # fmt: skip
        issuer = await self._expected_issuer(link)
        if issuer is not None and params.get("iss") != issuer:
            self.audit.record("upstream_link_failed", user_id=user_id, server=server, status="issuer_mismatch")
            raise LinkError("The answer did not come from the expected provider (RFC 9207 iss). Start again.")
        error = params.get("error")
        if error is not None or "code" not in params:
            code = (error or "no_code")[:60]
            self.audit.record("upstream_link_failed", user_id=user_id, server=server, status=code)
            if code == "access_denied":
                raise LinkError(f"You did not allow access at {host_of(link.authorization_url)}; nothing was linked.")
            raise LinkError(f"{host_of(link.authorization_url)} answered {code!r}; nothing was linked.")
        try:
            verifier = self.box.open(flow.verifier, context=flow_context(state_hash))
        except SealError:
            self.audit.record("upstream_link_failed", user_id=user_id, server=server, status="unreadable_flow")
            raise LinkError("This link attempt cannot be completed. Start linking again from this page.") from None
        try:
            tokens = await exchange_code(link.token_url, link.registration, code=params["code"], verifier=verifier,
                                         redirect_uri=self.callback_url(server), asked=link.scopes)  # fmt: skip
        except ProviderError as exc:
            self.audit.record("upstream_link_failed", user_id=user_id, server=server,
                              status=exc.error or "unavailable", detail=exc.message)  # fmt: skip
            raise LinkError(f"Linking failed: {exc.message}") from None
        now = self.clock()
        store = self.astore.store
        old = await self.astore.call(store.get_upstream_credential, user_id, server)
        cred = UpstreamCredential(
            user_id=user_id, server=server, kind="oauth", scheme=link.scheme,
            secret=self.box.seal(tokens.access_token, context=seal_context(user_id, server, "secret")),
            refresh=self.box.seal(tokens.refresh_token, context=seal_context(user_id, server, "refresh"))
            if tokens.refresh_token else None,
            expires_at=tokens.expires_at, scopes=tokens.scope, created_at=now, updated_at=now,
            version=(old.version + 1) if old else 1,
        )  # fmt: skip
        await self.astore.call(store.put_upstream_credential, cred)
        self.audit.record("upstream_linked", user_id=user_id, server=server, status="ok",
                          detail=f"scopes {' '.join(tokens.scope) or '-'}"[:200])  # fmt: skip
        if old is not None and old.kind == "oauth":
            await self._revoke(plan, old)

    # -- remove -------------------------------------------------------------------------------
    async def remove(self, user_id: str, server: str) -> str:
        """Delete the user's credential (revoking a linked account at the provider).

        Returns ``none`` (nothing to remove), ``removed`` (a pasted key), ``revoked``,
        ``not_revocable`` or ``failed`` (revoking at the provider did not work): keys of ``REMOVED``.
        """
        plan = self.plan(server)
        old = await self.astore.call(self.astore.store.delete_upstream_credential, user_id, server)
        if old is None:
            return "none"
        outcome = await self._revoke(plan, old) if old.kind == "oauth" else "removed"
        self.audit.record("upstream_unlinked", user_id=user_id, server=server, status="ok",
                          detail=f"{old.kind}: {outcome}")  # fmt: skip
        return outcome if outcome in REMOVED else "failed"

    async def _revoke(self, plan: PerUserPlan, cred: UpstreamCredential) -> str:
        """Revoke a linked account's tokens upstream: revoked | not_revocable | <why it failed>."""
        link = plan.link
        if link is None:
            return "not_revocable"
        url = link.revocation_url or (await self._metadata_of(link) or {}).get("revocation_endpoint")
        if not isinstance(url, str) or not url:
            return "not_revocable"
        try:
            if cred.refresh is not None:
                refresh_token = self.box.open(cred.refresh, context=seal_context(cred.user_id, cred.server, "refresh"))
                await revoke(url, link.registration, token=refresh_token, hint="refresh_token")
            access = self.box.open(cred.secret, context=seal_context(cred.user_id, cred.server, "secret"))
            await revoke(url, link.registration, token=access, hint="access_token")
        except ProviderError as exc:
            log.warning("revoking %s's %s tokens failed: %s", cred.user_id, cred.server, exc.message)
            return exc.message
        except PortalError as exc:  # the sealed tokens do not open any more: nothing to send
            return exc.message
        return "revoked"

    # -- provider metadata --------------------------------------------------------------------
    async def _metadata_of(self, link: LinkOption) -> dict[str, Any] | None:
        parts = urlsplit(link.authorization_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        cached = self._metadata.get(origin)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        doc = await discover((f"{origin}/.well-known/oauth-authorization-server",
                              f"{origin}/.well-known/openid-configuration"))  # fmt: skip
        self._metadata[origin] = (self.clock() + METADATA_SECONDS, doc)
        return doc

    async def _expected_issuer(self, link: LinkOption) -> str | None:
        """The provider's issuer when it advertises RFC 9207 ``iss`` in authorization responses."""
        doc = await self._metadata_of(link)
        if not doc or doc.get("authorization_response_iss_parameter_supported") is not True:
            return None
        issuer = doc.get("issuer")
        return issuer if isinstance(issuer, str) else None
