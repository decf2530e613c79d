"""Each user's own upstream credential, as the engine's ``CredentialSource`` (``codemode.Caller.credentials``).

:class:`UserCredentials` is the hosting layer's resolver (``credentials_for(user_id, server)``). For
a per-user server it returns a :class:`UserCredentialSource` bound to that user: the credential is
read (and unsealed) on the first upstream call of the request, never before, and only that user's
row is ever read. With no credential, a broken link or an unreadable row, ``apply`` raises an
``UpstreamError`` that the guest gets as a catchable ``ApiError`` naming the portal page where the
user adds one; the call never leaves the host.

Linked OAuth accounts: the access token is refreshed shortly before it expires, and once more
when the upstream answers 401 (``invalid_tokens``). Refreshes are coalesced: one per credential at
a time in this process (a lock), and across replicas (a lease in the store; the others wait for
the new version). A refresh the provider refuses (``invalid_grant``: revoked, expired) marks the
link broken; the user links again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping

import anyio

from codemode import ConfigError, CredentialSource, UpstreamError
from codemode._credentials import Credentials, env_var_name
from codemode._upstream_types import UpstreamRequest

from ._audit import AuditLog
from ._box import SealError, SecretBox
from ._oauthclient import ProviderError
from ._oauthclient import refresh as refresh_tokens
from ._store import AsyncStore, UpstreamCredential
from ._upstream_plan import BEARER, PerUserPlan

__all__ = [
    "ERR_BROKEN",
    "ERR_EXPIRED",
    "ERR_MISSING",
    "ERR_UNREADABLE",
    "REFRESH_LEASE_SECONDS",
    "REFRESH_MARGIN_SECONDS",
    "UserCredentialSource",
    "UserCredentials",
    "seal_context",
]

log = logging.getLogger("codemode.portal.upstream")

REFRESH_MARGIN_SECONDS = 30.0  # refresh this long before expiry (at most a quarter of the token's lifetime)
REFRESH_LEASE_SECONDS = 30.0  # how long one replica may hold a credential's refresh
LEASE_POLL_SECONDS = 0.2

ERR_MISSING = "upstream.no_user_credential"
ERR_BROKEN = "upstream.user_credential_revoked"
ERR_UNREADABLE = "upstream.user_credential_unreadable"
ERR_EXPIRED = "upstream.user_credential_expired"


def seal_context(user_id: str, server: str, field: str) -> str:
    """What a sealed column is bound to: one field of one user's credential for one server."""
    return f"upstream:{user_id}:{server}:{field}"


def _bearer_secrets(token: str) -> set[str]:
    return {token, f"Bearer {token}"}


class UserCredentials:
    """The per-user credential resolver and token keeper (one per portal)."""

    def __init__(
        self,
        astore: AsyncStore,
        box: SecretBox,
        plans: Mapping[str, PerUserPlan],
        audit: AuditLog,
        *,
        page_url: Callable[[str], str],
        clock: Callable[[], float] = time.time,
        lease_seconds: float = REFRESH_LEASE_SECONDS,
    ) -> None:
        self.astore = astore
        self.box = box
        self.plans = dict(plans)
        self.audit = audit
        self.page_url = page_url
        self.clock = clock
        self.lease_seconds = lease_seconds
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()
        self.refreshes = 0  # provider calls made (for tests and the bench)

    async def credentials_for(self, user_id: str, server: str) -> CredentialSource | None:
        plan = self.plans.get(server)
        return None if plan is None else UserCredentialSource(self, user_id, plan)

    # -- reading ---------------------------------------------------------------------------
    def _problem(self, server: str, code: str) -> UpstreamError:
        url = self.page_url(server)
        text = {
            ERR_MISSING: f"server {server} calls its API with each user's own credential, and you have not added "
                         f"yours. Add it at {url}, then run this again.",
            ERR_BROKEN: f"your linked account for server {server} no longer works (the provider refused to renew "
                        f"access). Link it again at {url}.",
            ERR_UNREADABLE: f"your stored credential for server {server} cannot be read by the portal any more. "
                            f"Add it again at {url}.",
            ERR_EXPIRED: f"your credential for server {server} has expired and cannot be renewed. Add or link it "
                         f"again at {url}.",
        }[code]  # fmt: skip
        return UpstreamError(text, code=code)

    async def load(self, user_id: str, server: str) -> UpstreamCredential:
        cred = await self.astore.call(self.astore.store.get_upstream_credential, user_id, server)
        if cred is None:
            raise self._problem(server, ERR_MISSING)
        if cred.status == "broken":
            raise self._problem(server, ERR_BROKEN)
        return cred

    def reveal(self, cred: UpstreamCredential, field: str = "secret") -> str:
        sealed = cred.secret if field == "secret" else cred.refresh
        if sealed is None:
            raise self._problem(cred.server, ERR_EXPIRED)
        try:
            return self.box.open(sealed, context=seal_context(cred.user_id, cred.server, field))
        except SealError as exc:
            log.warning("credential of user %s for %s does not open: %s", cred.user_id, cred.server, exc.message)
            raise self._problem(cred.server, ERR_UNREADABLE) from None

    # -- OAuth access tokens -----------------------------------------------------------------
    def expiring(self, cred: UpstreamCredential) -> bool:
        if cred.expires_at is None:
            return False
        lifetime = max(cred.expires_at - cred.updated_at, 0.0)
        margin = min(REFRESH_MARGIN_SECONDS, lifetime / 4)
        return self.clock() >= cred.expires_at - margin

    async def access_token(self, plan: PerUserPlan, cred: UpstreamCredential, *, force: bool) -> tuple[
        UpstreamCredential, str
    ]:  # fmt: skip
        """A usable access token of ``cred``: as stored, or refreshed when it is (about to be) expired
        or when ``force`` (the upstream refused it). Concurrent refreshes of one credential coalesce."""
        if not force and not self.expiring(cred):
            return cred, self.reveal(cred)
        if cred.refresh is None or plan.link is None:
            if force:
                return cred, self.reveal(cred)  # nothing to renew it with: the 401 stands
            raise self._problem(cred.server, ERR_EXPIRED)
        key = (cred.user_id, cred.server)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            current = await self.load(cred.user_id, cred.server)
            if current.version != cred.version:  # refreshed (or replaced) while we waited
                return current, self.reveal(current)
            return await self._refresh(plan, current)

    async def _refresh(self, plan: PerUserPlan, current: UpstreamCredential) -> tuple[UpstreamCredential, str]:
        store = self.astore.store
        user_id, server = current.user_id, current.server
        deadline = self.clock() + self.lease_seconds
        while True:
            now = self.clock()
            claimed = await self.astore.call(store.claim_upstream_refresh, user_id, server, current.version,
                                             now + self.lease_seconds, now)  # fmt: skip
            if claimed:
                break
            await anyio.sleep(LEASE_POLL_SECONDS)  # another replica is refreshing it: wait for its result
            latest = await self.load(user_id, server)
            if latest.version != current.version:
                return latest, self.reveal(latest)
            if self.clock() > deadline:
                raise UpstreamError(f"renewing your token for server {server} is taking too long; try again.",
                                    code="upstream.timeout")  # fmt: skip
        assert plan.link is not None
        try:
            refresh_token = self.reveal(current, "refresh")
            self.refreshes += 1
            tokens = await refresh_tokens(plan.link.refresh_url, plan.link.registration, refresh_token=refresh_token,
                                          asked=current.scopes)  # fmt: skip
        except ProviderError as exc:
            raise await self._refresh_failed(current, exc) from None
        except UpstreamError:
            await self.astore.call(store.swap_upstream_credential, dataclasses.replace(current, lease_until=None),
                                   current.version)  # fmt: skip
            raise
        now = self.clock()
        ctx = seal_context(user_id, server, "secret")
        new = dataclasses.replace(
            current, secret=self.box.seal(tokens.access_token, context=ctx),
            refresh=self.box.seal(tokens.refresh_token, context=seal_context(user_id, server, "refresh"))
            if tokens.refresh_token else None,
            expires_at=tokens.expires_at, scopes=tokens.scope or current.scopes, version=current.version + 1,
            lease_until=None, updated_at=now,
        )  # fmt: skip
        if not await self.astore.call(store.swap_upstream_credential, new, current.version):
            latest = await self.load(user_id, server)  # unlinked or replaced meanwhile: theirs wins
            return latest, self.reveal(latest)
        self.audit.record("upstream_refreshed", user_id=user_id, server=server, status="ok")
        return new, tokens.access_token

    async def _refresh_failed(self, current: UpstreamCredential, exc: ProviderError) -> UpstreamError:
        """Record a failed refresh; the error to raise (a refused one marks the link broken)."""
        store = self.astore.store
        if exc.refused and exc.error == "invalid_grant":  # the grant is dead: only a new link helps
            broken = dataclasses.replace(current, status="broken", version=current.version + 1, lease_until=None,
                                         updated_at=self.clock())  # fmt: skip
            await self.astore.call(store.swap_upstream_credential, broken, current.version)
            self.audit.record("upstream_refresh_failed", user_id=current.user_id, server=current.server,
                              status=exc.error or "refused", detail="link marked broken")  # fmt: skip
            return self._problem(current.server, ERR_BROKEN)
        await self.astore.call(store.swap_upstream_credential, dataclasses.replace(current, lease_until=None),
                               current.version)  # fmt: skip
        status = exc.error or "unavailable"
        self.audit.record("upstream_refresh_failed", user_id=current.user_id, server=current.server,
                          status=status, detail=exc.message)  # fmt: skip
        if exc.refused:  # e.g. invalid_client: the portal's registration, not the user's link
            return UpstreamError(f"the provider of server {current.server} refused to renew your token "
                                 f"({status}); the portal's operator must fix its registration there.",
                                 code="upstream.auth_failed")  # fmt: skip
        return UpstreamError(
            f"could not renew your token for server {current.server}: {exc.message}", code="upstream.unreachable"
        )


class UserCredentialSource:
    """One request's view of one user's credential for one server (see the module docstring)."""

    def __init__(self, keeper: UserCredentials, user_id: str, plan: PerUserPlan) -> None:
        self.keeper = keeper
        self.user_id = user_id
        self.plan = plan
        self._cred: UpstreamCredential | None = None
        self._value: str | None = None
        self._static: Credentials | None = None
        self._force = False
        self._retried = False
        self._secrets: set[str] = set()
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<UserCredentialSource user={self.user_id} server={self.plan.server}>"

    async def apply(self, request: UpstreamRequest) -> UpstreamRequest:
        async with self._lock:
            cred, value = await self._current()
        if cred.kind == "key":
            return await self._apply_key(cred, value, request)
        return _with_bearer(request, cred.scheme, value)

    async def _current(self) -> tuple[UpstreamCredential, str]:
        keeper = self.keeper
        if self._cred is None:
            self._cred = await keeper.load(self.user_id, self.plan.server)
        cred = self._cred
        if cred.kind == "oauth" and (self._force or keeper.expiring(cred)):
            force, self._force = self._force, False
            cred, value = await keeper.access_token(self.plan, cred, force=force)
            self._cred, self._value = cred, value
        elif self._value is None:
            self._value = keeper.reveal(cred)
        assert self._value is not None
        if cred.kind == "oauth":
            self._secrets |= _bearer_secrets(self._value)
        return cred, self._value

    async def _apply_key(self, cred: UpstreamCredential, value: str, request: UpstreamRequest) -> UpstreamRequest:
        if cred.scheme == BEARER:
            self._secrets |= _bearer_secrets(value)
            return _with_bearer(request, BEARER, value)
        if self._static is None:
            scheme = self.plan.schemes.get(cred.scheme)
            if scheme is None:
                raise self.keeper._problem(cred.server, ERR_UNREADABLE)
            try:
                self._static = Credentials.from_env({cred.scheme: scheme}, {env_var_name(cred.scheme): value})
            except ConfigError:  # e.g. a value too short to scrub, stored before that rule: never sent
                raise self.keeper._problem(cred.server, ERR_UNREADABLE) from None
            self._secrets |= self._static.secrets()
        return await self._static.apply(request)

    def invalidate_tokens(self, request: UpstreamRequest) -> bool:
        cred = self._cred
        if cred is None or cred.kind != "oauth" or cred.refresh is None or self._retried:
            return False
        self._retried = self._force = True  # once per request: a second 401 stands
        return True

    def secrets(self) -> Iterable[str]:
        return set(self._secrets)

    def reserved(self) -> frozenset[tuple[str, str]]:
        """Where any credential this user may hold for the server goes (whichever they gave)."""
        names = {("header", "authorization")}
        for scheme in self.plan.schemes.values():
            if scheme.type == "apiKey" and scheme.location and scheme.param_name:
                names.add((scheme.location, scheme.param_name.lower()))
        return frozenset(names)


def _with_bearer(request: UpstreamRequest, scheme: str, token: str) -> UpstreamRequest:
    """``Authorization: Bearer`` on a request whose security alternatives ``scheme`` satisfies alone
    (every request for the ``bearer`` pseudo scheme); otherwise the request is left unauthenticated."""
    if scheme != BEARER and not any(alt and set(alt) <= {scheme} for alt in request.security):
        return request
    headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
    headers["Authorization"] = f"Bearer {token}"
    return dataclasses.replace(request, headers=headers)
