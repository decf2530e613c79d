"""The per-user credentials domain layer, assembled for tests: the real provider as the upstream,
a store, a box, the resolver and the account service, and the engine's real Executor over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from codemode_portal import ServerEntry, Store
from codemode_portal._audit import AuditLog
from codemode_portal._box import SecretBox, generate_key, parse_key
from codemode_portal._provider_config import UpstreamOAuthEntry
from codemode_portal._store import AsyncStore, User
from codemode_portal._upstream_accounts import UpstreamAccounts
from codemode_portal._upstream_plan import PerUserPlan, plan_for
from codemode_portal._upstream_sources import UserCredentials
from idp import OAuthClient, OAuthProvider

from codemode import ApiSpec, Caller
from codemode._execute import Executor
from codemode._format import format_execute
from codemode._sandbox import LocalSandbox
from codemode._settings import ExecuteSettings
from codemode._upstream import AuditEvent, HttpxUpstream, UpstreamSettings

__all__ = ["ME", "ME_OR_ERROR", "OTHER", "PORTAL", "SECRET_VAR", "SERVER", "World", "callback", "make_world"]

PORTAL = "http://127.0.0.1:1"  # the portal's issuer in these tests: callbacks are read, never followed
SERVER = "notes"
OTHER = "notes2"  # a second per-user server with the same upstream (cross-server attacks)
SECRET_VAR = "NOTES_CLIENT_SECRET"


def callback(server: str = SERVER) -> str:
    return f"{PORTAL}/upstream/{server}/callback"


@dataclass
class World:
    idp: OAuthProvider
    client: OAuthClient
    store: Store
    box: SecretBox
    audit: AuditLog
    plan: PerUserPlan
    keeper: UserCredentials
    accounts: UpstreamAccounts
    executor: Executor
    events: list[AuditEvent]

    async def link(self, user_id: str, username: str, session: str = "session-1", **consent: Any) -> None:
        url = await self.accounts.start_link(user_id, session, SERVER)
        await self.accounts.finish_link(user_id, session, SERVER, await self.consent(url, username, **consent))

    async def consent(self, url: str, username: str, **kw: Any) -> dict[str, str]:
        location = await asyncio.to_thread(self.idp.login_and_consent, url, username, **kw)
        assert location.startswith(callback() + "?"), location
        return dict(parse_qsl(urlsplit(location).query))

    async def run(self, user_id: str, code: str) -> dict[str, Any]:
        source = await self.keeper.credentials_for(user_id, SERVER)
        report = await self.executor.execute(code, caller=Caller(subject=user_id, client_id="mcp-client",
                                                                   credentials=source))  # fmt: skip
        text, is_error = format_execute(report, max_chars=40_000)
        return {**json.loads(text), "is_error": is_error}

    def audit_rows(self) -> list[Any]:
        self.audit.flush()
        return self.store.list_audit()


ME = "result = api.call('getMe')"
ME_OR_ERROR = "try:\n    result = api.call('getMe')\nexcept ApiError as e:\n    result = {'error': str(e)}\n"


def make_world(idp: OAuthProvider, spec: ApiSpec, store: Store, *, ttl: int | None = None,
               keys: tuple[bytes, ...] | None = None) -> World:  # fmt: skip
    client = idp.register_client([callback(), callback(OTHER)], scope="notes:read notes:write", access_token_ttl=ttl)
    oauth = UpstreamOAuthEntry(client_id=client.client_id, client_secret=SECRET_VAR)
    entry = ServerEntry(spec=idp.openapi_url, upstream_auth="per-user", upstream_oauth=oauth)
    assert client.client_secret is not None
    plan = plan_for(SERVER, entry, spec, {SECRET_VAR: client.client_secret})
    for uid, name in (("u-alice", "alice"), ("u-bob", "bob")):
        store.create_user(User(id=uid, name=name, password_hash="x", created_at=time.time()))
    astore = AsyncStore(store)
    box = SecretBox(keys or (parse_key(generate_key(), "test"),))
    audit = AuditLog(store)
    plans = {SERVER: plan, OTHER: plan_for(OTHER, entry, spec, {SECRET_VAR: client.client_secret})}
    keeper = UserCredentials(astore, box, plans, audit, page_url=lambda s: f"{PORTAL}/account/credentials#{s}")
    accounts = UpstreamAccounts(astore, box, plans, audit, issuer=PORTAL)
    events: list[AuditEvent] = []
    upstream = HttpxUpstream(UpstreamSettings(), audit_hooks=(events.append,))
    ex = Executor(spec, LocalSandbox(), upstream, ExecuteSettings(), base_url=idp.base_url)
    return World(idp, client, store, box, audit, plan, keeper, accounts, ex, events)
