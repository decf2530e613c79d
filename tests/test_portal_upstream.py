"""Each user's own upstream identity, the domain layer, against the real loopback OAuth provider
(tests/oauth_provider: its /openapi.json is the per-user upstream spec, /api/me says whose token it is).

Linking runs the provider's real authorization-code + PKCE flow (sign-in and consent driven like a
browser would), tokens are stored sealed, and ``execute`` (the engine's real Executor over real
HTTP) calls the provider with the token of the user the request belongs to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal import MemoryStore, ServerEntry, SqlStore
from codemode_portal._provider_config import UpstreamOAuthEntry
from codemode_portal._store import AsyncStore
from codemode_portal._upstream_accounts import LinkError
from codemode_portal._upstream_plan import plan_for
from codemode_portal._upstream_sources import ERR_BROKEN, ERR_MISSING, ERR_UNREADABLE, UserCredentials
from idp import OAuthProvider
from upstream_world import ME, ME_OR_ERROR, PORTAL, SECRET_VAR, SERVER, World, make_world

from codemode import ApiSpec, CodemodeError, load_spec


@pytest.fixture(scope="module")
def notes_spec(idp: OAuthProvider) -> ApiSpec:
    return load_spec(idp.openapi_url)


@pytest.fixture
async def world(idp: OAuthProvider, notes_spec: ApiSpec) -> AsyncIterator[World]:
    w = make_world(idp, notes_spec, MemoryStore())
    yield w
    await w.executor.upstream.aclose()  # type: ignore[attr-defined]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'portal.db'}"


# -- the plan ---------------------------------------------------------------------------------


def test_the_plan_comes_from_the_specs_authorization_code_flow(idp: OAuthProvider, notes_spec: ApiSpec) -> None:
    entry = ServerEntry(spec="x", upstream_auth="per-user",
                        upstream_oauth=UpstreamOAuthEntry(client_id="c", client_secret=SECRET_VAR))  # fmt: skip
    plan = plan_for(SERVER, entry, notes_spec, {SECRET_VAR: "s3cret"})
    assert plan.link is not None
    assert plan.link.authorization_url == f"{idp.base_url}/authorize"
    assert plan.link.token_url == plan.link.refresh_url == f"{idp.base_url}/token"
    assert plan.link.scopes == ("notes:read", "notes:write") and plan.link.scheme == "oauth2"
    assert plan.link.registration.auth_method == "client_secret_basic"
    assert [p.scheme for p in plan.paste] == ["oauth2"]
    missing = f"servers.notes.upstream_oauth.client_secret: environment variable {SECRET_VAR} is not set"
    with pytest.raises(CodemodeError, match=re.escape(missing)):
        plan_for(SERVER, entry, notes_spec, {})
    bad = ServerEntry(spec="x", upstream_auth="per-user", upstream_scheme="nope")
    unknown = "servers.notes.upstream_scheme: the spec has no security scheme 'nope'"
    with pytest.raises(CodemodeError, match=re.escape(unknown)):
        plan_for(SERVER, bad, notes_spec, {})


# -- linking and using each user's own account ---------------------------------------------------


async def test_two_linked_users_each_see_their_own_identity(world: World) -> None:
    await world.link("u-alice", "alice")
    await world.link("u-bob", "bob", session="session-2")
    alice = await world.run("u-alice", ME)
    bob = await world.run("u-bob", ME)
    assert not alice["is_error"] and not bob["is_error"], (alice, bob)
    assert alice["result"]["username"] == "alice" and alice["result"]["sub"] == "user-alice"
    assert bob["result"]["username"] == "bob"
    assert alice["result"]["client_id"] == world.client.client_id  # the portal's upstream client, not the MCP one
    # the audit events of the upstream calls name the portal user they were made for
    assert [e.subject for e in world.events] == ["u-alice", "u-bob"]
    rows = world.audit_rows()
    assert [(r.event, r.user_id) for r in rows if r.event == "upstream_linked"] == [
        ("upstream_linked", "u-alice"), ("upstream_linked", "u-bob")]  # fmt: skip
    # the user's token goes in Authorization: guest code may not set that header itself
    source = await world.keeper.credentials_for("u-alice", SERVER)
    assert source is not None and ("header", "authorization") in source.reserved()


async def test_a_user_without_a_credential_gets_a_catchable_error_naming_the_page(world: World) -> None:
    await world.link("u-alice", "alice")
    out = await world.run("u-bob", ME_OR_ERROR)
    assert not out["is_error"], out
    assert f"{PORTAL}/account/credentials#notes" in out["result"]["error"]
    assert "have not added yours" in out["result"]["error"]
    assert world.events[-1].attempts == 0 and world.events[-1].error == ERR_MISSING  # never left the host
    uncaught = await world.run("u-bob", ME)
    assert uncaught["is_error"] and "ApiError" in json.dumps(uncaught)


async def test_an_expired_token_is_refreshed_before_the_call(idp: OAuthProvider, notes_spec: ApiSpec) -> None:
    w = make_world(idp, notes_spec, MemoryStore(), ttl=2)
    await w.link("u-alice", "alice")
    before = w.store.get_upstream_credential("u-alice", SERVER)
    assert before is not None and before.expires_at is not None
    await asyncio.sleep(max(before.expires_at - time.time(), 0) + 0.3)
    out = await w.run("u-alice", ME)
    assert not out["is_error"] and out["result"]["username"] == "alice", out
    after = w.store.get_upstream_credential("u-alice", SERVER)
    assert after is not None and after.version == before.version + 1 and after.secret != before.secret
    assert w.keeper.refreshes == 1
    assert [e.attempts for e in w.events] == [1]  # refreshed ahead of the call: no 401 round trip
    assert [r.event for r in w.audit_rows()].count("upstream_refreshed") == 1


async def test_a_401_refreshes_once_and_retries(world: World) -> None:
    await world.link("u-alice", "alice")
    cred = world.store.get_upstream_credential("u-alice", SERVER)
    assert cred is not None
    access = world.keeper.reveal(cred)
    revoke(world, access, "access_token")  # the provider forgets the access token, not the grant
    out = await world.run("u-alice", ME)
    assert not out["is_error"] and out["result"]["username"] == "alice", out
    assert world.keeper.refreshes == 1
    assert world.events[-1].attempts == 2  # 401, then the retry with the new token


async def test_a_revoked_link_gives_a_catchable_error_and_is_marked_broken(world: World) -> None:
    await world.link("u-alice", "alice")
    cred = world.store.get_upstream_credential("u-alice", SERVER)
    assert cred is not None
    revoke(world, world.keeper.reveal(cred, "refresh"), "refresh_token")  # the user revoked it at the provider
    out = await world.run("u-alice", ME_OR_ERROR)
    assert not out["is_error"], out
    assert "no longer works" in out["result"]["error"] and "/account/credentials#notes" in out["result"]["error"]
    broken = world.store.get_upstream_credential("u-alice", SERVER)
    assert broken is not None and broken.status == "broken"
    rows = [r for r in world.audit_rows() if r.event == "upstream_refresh_failed"]
    assert [(r.status, r.detail) for r in rows] == [("invalid_grant", "link marked broken")]
    # the next run fails at once, without asking the provider again
    again = await world.run("u-alice", ME_OR_ERROR)
    assert "no longer works" in again["result"]["error"] and world.keeper.refreshes == 1
    assert world.events[-1].attempts == 0 and world.events[-1].error == ERR_BROKEN
    # linking again repairs it
    await world.link("u-alice", "alice")
    assert (await world.run("u-alice", ME))["result"]["username"] == "alice"


async def test_concurrent_refreshes_of_one_credential_coalesce(idp: OAuthProvider, notes_spec: ApiSpec) -> None:
    w = make_world(idp, notes_spec, MemoryStore(), ttl=1)
    await w.link("u-alice", "alice")
    await asyncio.sleep(1.3)
    outs = await asyncio.gather(*(w.run("u-alice", ME) for _ in range(6)))
    assert all(o["result"]["username"] == "alice" for o in outs), outs
    assert w.keeper.refreshes == 1


async def test_replicas_sharing_a_database_refresh_once(
    idp: OAuthProvider, notes_spec: ApiSpec, sqlite_url: str
) -> None:
    store = SqlStore(sqlite_url)
    w = make_world(idp, notes_spec, store, ttl=1)
    other = UserCredentials(AsyncStore(SqlStore(sqlite_url)), w.box, {SERVER: w.plan}, w.audit,
                            page_url=lambda s: s)  # a second replica: its own store, same database  # fmt: skip
    await w.link("u-alice", "alice")
    await asyncio.sleep(1.3)
    cred = store.get_upstream_credential("u-alice", SERVER)
    assert cred is not None
    results = await asyncio.gather(*(k.access_token(w.plan, cred, force=False) for k in (w.keeper, other) * 3))
    assert len({token for _, token in results}) == 1  # everyone got the one new token
    assert w.keeper.refreshes + other.refreshes == 1


async def test_unlinking_revokes_the_tokens_at_the_provider(world: World) -> None:
    await world.link("u-alice", "alice")
    cred = world.store.get_upstream_credential("u-alice", SERVER)
    assert cred is not None
    access, refresh = world.keeper.reveal(cred), world.keeper.reveal(cred, "refresh")
    assert me(world, access).status_code == 200
    assert await world.accounts.remove("u-alice", SERVER) == "revoked"
    assert me(world, access).status_code == 401
    assert world.idp.refresh(world.client, refresh).json()["error"] == "invalid_grant"
    assert world.store.get_upstream_credential("u-alice", SERVER) is None
    rows = [r for r in world.audit_rows() if r.event == "upstream_unlinked"]
    assert [(r.user_id, r.detail) for r in rows] == [("u-alice", "oauth: revoked")]
    out = await world.run("u-alice", ME_OR_ERROR)
    assert "have not added yours" in out["result"]["error"]


# -- pasted keys -------------------------------------------------------------------------------


async def test_a_pasted_token_is_used_only_for_its_owner_and_never_stored_in_clear(
    idp: OAuthProvider, notes_spec: ApiSpec, sqlite_url: str, tmp_path: Path
) -> None:
    w = make_world(idp, notes_spec, SqlStore(sqlite_url))
    direct = idp.register_client(["http://127.0.0.1:1/elsewhere"], scope="notes:read notes:write")
    alice_token = idp.authorize(direct, "alice", scope="notes:read")["access_token"]
    await w.accounts.paste("u-alice", SERVER, "oauth2", f"  {alice_token}\n")
    alice = await w.run("u-alice", "result = api.call('getMe')\nprint(result)")
    assert alice["result"]["username"] == "alice" and alice["result"]["client_id"] == direct.client_id
    assert alice_token not in json.dumps(alice)  # scrubbed from what the guest sees
    bob = await w.run("u-bob", ME_OR_ERROR)
    assert "have not added yours" in bob["result"]["error"]  # never alice's key
    rows = w.audit_rows()
    assert [(r.event, r.user_id, r.detail) for r in rows if r.event == "upstream_key_saved"] == [
        ("upstream_key_saved", "u-alice", "scheme oauth2")]  # fmt: skip
    w.store.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("portal.db*"))
    assert blob and alice_token.encode() not in blob
    assert all(alice_token not in json.dumps(dataclasses.asdict(r)) for r in rows)


async def test_pasting_refuses_what_cannot_be_a_credential(world: World) -> None:
    for value, why in (("", "Paste the credential"), ("a\nb", "printable ASCII"), ("x" * 9000, "longer than"),
                       ("tok\u00e9n", "printable ASCII"),
                       ("abc", "too short")):  # fmt: skip
        with pytest.raises(LinkError, match=why):
            await world.accounts.paste("u-alice", SERVER, "oauth2", value)
    with pytest.raises(LinkError, match="does not take a pasted credential of that kind"):
        await world.accounts.paste("u-alice", SERVER, "api_key", "abc")
    assert world.store.list_upstream_credentials() == []


# -- hostile callbacks and stored rows ---------------------------------------------------------------


async def test_a_replayed_callback_is_refused(world: World) -> None:
    url = await world.accounts.start_link("u-alice", "s-a", SERVER)
    params = await world.consent(url, "alice")
    await world.accounts.finish_link("u-alice", "s-a", SERVER, params)
    with pytest.raises(LinkError, match="expired or was already used"):
        await world.accounts.finish_link("u-alice", "s-a", SERVER, params)


async def test_a_callback_in_another_session_or_for_another_user_is_refused(world: World) -> None:
    # bob starts a link and lures alice into completing it in her session: refused
    url = await world.accounts.start_link("u-bob", "s-bob", SERVER)
    params = await world.consent(url, "bob")
    with pytest.raises(LinkError, match="started elsewhere"):
        await world.accounts.finish_link("u-alice", "s-alice", SERVER, params)
    # the same user in another browser session: refused too
    url = await world.accounts.start_link("u-alice", "s-1", SERVER)
    params = await world.consent(url, "alice")
    with pytest.raises(LinkError, match="started elsewhere"):
        await world.accounts.finish_link("u-alice", "s-2", SERVER, params)
    assert world.store.list_upstream_credentials() == []
    statuses = [r.status for r in world.audit_rows() if r.event == "upstream_link_failed"]
    assert statuses == ["state_mismatch", "state_mismatch"]


async def test_forged_states_and_provider_errors_are_refused(world: World) -> None:
    for params in ({}, {"state": "made-up", "code": "x"}, {"state": "s" * 500, "code": "x"}):
        with pytest.raises(LinkError):
            await world.accounts.finish_link("u-alice", "s", SERVER, params)
    url = await world.accounts.start_link("u-alice", "s", SERVER)
    denied = await world.consent(url, "alice", approve=False)
    with pytest.raises(LinkError, match="did not allow access"):
        await world.accounts.finish_link("u-alice", "s", SERVER, denied)
    url = await world.accounts.start_link("u-alice", "s", SERVER)
    params = await world.consent(url, "alice")
    forged = {**params, "iss": "https://evil.example"}
    with pytest.raises(LinkError, match="RFC 9207"):
        await world.accounts.finish_link("u-alice", "s", SERVER, forged)
    url = await world.accounts.start_link("u-alice", "s", SERVER)
    params = await world.consent(url, "alice")
    with pytest.raises(LinkError, match="refused: invalid_grant"):
        await world.accounts.finish_link("u-alice", "s", SERVER, {**params, "code": "not-the-code"})
    assert world.store.list_upstream_credentials() == []


async def test_a_tampered_or_moved_ciphertext_is_unreadable_never_someone_elses(world: World) -> None:
    await world.link("u-alice", "alice")
    await world.link("u-bob", "bob")
    alice = world.store.get_upstream_credential("u-alice", SERVER)
    bob = world.store.get_upstream_credential("u-bob", SERVER)
    assert alice is not None and bob is not None
    world.store.put_upstream_credential(dataclasses.replace(alice, secret=bob.secret))  # bob's token in alice's row
    out = await world.run("u-alice", ME_OR_ERROR)
    assert "cannot be read" in out["result"]["error"] and world.events[-1].error == ERR_UNREADABLE
    flipped = alice.secret[:-3] + ("A" if alice.secret[-3] != "A" else "B") + alice.secret[-2:]
    world.store.put_upstream_credential(dataclasses.replace(alice, secret=flipped))
    out = await world.run("u-alice", ME_OR_ERROR)
    assert "cannot be read" in out["result"]["error"]
    assert (await world.run("u-bob", ME))["result"]["username"] == "bob"


# -- helpers ----------------------------------------------------------------------------------------


def revoke(world: World, token: str, hint: str) -> None:
    assert world.client.client_secret is not None
    with httpx.Client(trust_env=False) as http:
        reply = http.post(world.idp.revocation_endpoint, data={"token": token, "token_type_hint": hint},
                          auth=(world.client.client_id, world.client.client_secret))  # fmt: skip
    assert reply.status_code == 200


def me(world: World, token: str) -> httpx.Response:
    with httpx.Client(trust_env=False) as http:
        return http.get(f"{world.idp.base_url}/api/me", headers={"Authorization": f"Bearer {token}"})
