"""Attacks on each user's own upstream credentials and on OIDC sign-in, beyond the happy paths:
another user's credentials, flows moved between servers, tampered pending flows, a provider that
refuses the portal itself, races between unlink and refresh and between replicas creating the key
file, floods of pending flows, forged form posts, open redirects, the wrong key after a restart,
short tokens, and a multi-tenant provider letting anyone in."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal import MemoryStore, SqlStore, Store, load_portal_config
from codemode_portal._app import build_portal
from codemode_portal._box import KEY_FILE, generate_key, load_box
from codemode_portal._oauthclient import ClientRegistration, ProviderError, _token_set
from codemode_portal._store import UpstreamCredential, User
from codemode_portal._upstream_accounts import LINK_STARTS_PER_WINDOW, LinkError
from codemode_portal._upstream_sources import ERR_UNREADABLE
from idp import OAuthProvider
from portal_extras_harness import (
    SECRET_VAR,
    link,
    notes_portal,
    oidc_portal,
    sign_in,
    sign_in_at_provider,
    signed_in_as,
    to_provider,
)
from portal_harness import Flow, form_fields, forms, post_form
from upstream_world import ME, ME_OR_ERROR, OTHER, SERVER, World, make_world

from codemode import ApiSpec, UpstreamError, load_spec
from codemode._sandbox import LocalSandbox
from codemode._upstream_types import UpstreamRequest

NOW = time.time()


@pytest.fixture(scope="module")
def notes_spec(idp: OAuthProvider) -> ApiSpec:
    return load_spec(idp.openapi_url)


@pytest.fixture
async def world(idp: OAuthProvider, notes_spec: ApiSpec) -> AsyncIterator[World]:
    w = make_world(idp, notes_spec, MemoryStore())
    yield w
    await w.executor.upstream.aclose()  # type: ignore[attr-defined]


# -- flows --------------------------------------------------------------------------------------------


async def test_a_flow_started_for_one_server_cannot_complete_another(world: World) -> None:
    url = await world.accounts.start_link("u-alice", "s", OTHER)
    params = await _consent_any(world, url, "alice")  # the provider's answer for OTHER, sent to SERVER
    with pytest.raises(LinkError, match="started elsewhere"):
        await world.accounts.finish_link("u-alice", "s", SERVER, params)
    assert world.store.list_upstream_credentials() == []


async def _consent_any(world: World, url: str, username: str) -> dict[str, str]:
    """The provider's redirect parameters, whichever of the portal's callbacks it goes to."""
    import asyncio
    from urllib.parse import parse_qsl, urlsplit

    location = await asyncio.to_thread(world.idp.login_and_consent, url, username)
    return dict(parse_qsl(urlsplit(location).query))


async def test_a_tampered_pending_flow_is_refused_not_a_crash(world: World) -> None:
    url = await world.accounts.start_link("u-alice", "s", SERVER)
    params = await world.consent(url, "alice")
    store = world.store
    assert isinstance(store, MemoryStore)
    ((state_hash, flow),) = store.flows.items()
    store.flows[state_hash] = dataclasses.replace(flow, verifier=flow.verifier[:-4] + "AAAA")
    with pytest.raises(LinkError, match="cannot be completed"):
        await world.accounts.finish_link("u-alice", "s", SERVER, params)
    statuses = [r.status for r in world.audit_rows() if r.event == "upstream_link_failed"]
    assert statuses == ["unreadable_flow"]


async def test_link_starts_are_limited_per_user(world: World) -> None:
    for _ in range(LINK_STARTS_PER_WINDOW):
        await world.accounts.start_link("u-alice", "s", SERVER)
    with pytest.raises(LinkError, match="Too many link attempts"):
        await world.accounts.start_link("u-alice", "s", SERVER)
    await world.accounts.start_link("u-bob", "s", SERVER)  # others are not affected
    store = world.store
    assert isinstance(store, MemoryStore)
    assert len(store.flows) == LINK_STARTS_PER_WINDOW + 1


# -- refresh ------------------------------------------------------------------------------------------


async def test_a_provider_refusing_the_portal_itself_does_not_break_the_users_link(world: World) -> None:
    await world.link("u-alice", "alice")
    cred = world.store.get_upstream_credential("u-alice", SERVER)
    assert cred is not None and world.plan.link is not None
    # the operator's client secret is wrong now (rotated at the provider): refreshes get invalid_client
    wrong = dataclasses.replace(world.plan.link, registration=ClientRegistration(
        world.client.client_id, "not-the-secret", "client_secret_basic"))  # fmt: skip
    world.keeper.plans[SERVER] = dataclasses.replace(world.plan, link=wrong)
    world.store.put_upstream_credential(dataclasses.replace(cred, expires_at=time.time() - 1))
    out = await world.run("u-alice", ME_OR_ERROR)
    assert "operator must fix" in out["result"]["error"] and "invalid_client" in out["result"]["error"], out
    after = world.store.get_upstream_credential("u-alice", SERVER)
    assert after is not None and after.status == "ok" and after.lease_until is None
    world.keeper.plans[SERVER] = world.plan  # fixed: the same link works again
    assert (await world.run("u-alice", ME))["result"]["username"] == "alice"


async def test_an_unreadable_refresh_token_releases_the_lease(world: World) -> None:
    await world.link("u-alice", "alice")
    cred = world.store.get_upstream_credential("u-alice", SERVER)
    assert cred is not None and cred.refresh is not None
    bad = dataclasses.replace(cred, refresh=cred.refresh[:-4] + "AAAA", expires_at=time.time() - 1)
    world.store.put_upstream_credential(bad)
    for _ in range(2):  # the same clear error each time, never "taking too long"
        out = await world.run("u-alice", ME_OR_ERROR)
        assert "cannot be read" in out["result"]["error"], out
    after = world.store.get_upstream_credential("u-alice", SERVER)
    assert after is not None and after.lease_until is None


def test_short_access_tokens_from_a_provider_are_refused() -> None:
    with pytest.raises(ProviderError, match="too short to keep secret"):
        _token_set({"access_token": "abc", "token_type": "Bearer"}, "the token endpoint", started=0, asked=())
    with pytest.raises(ProviderError, match="only bearer tokens"):
        _token_set({"access_token": "abcdefgh", "token_type": "mac"}, "the token endpoint", started=0, asked=())
    ok = _token_set({"access_token": "abcdefgh", "expires_in": "60", "scope": "a b"}, "x", started=10, asked=())
    assert ok.expires_at == 70 and ok.scope == ("a", "b")


# -- races ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_unlink_wins_against_concurrent_refreshes(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_db_url")
    store: Store = SqlStore(url)
    store.create_user(User(id="u1", name="alice", password_hash="x", created_at=NOW))
    cred = UpstreamCredential(user_id="u1", server="notes", kind="oauth", scheme="oauth2", secret="s",
                              created_at=NOW, updated_at=NOW)  # fmt: skip
    store.put_upstream_credential(cred)
    stop = threading.Event()

    def refresher() -> None:  # another replica renewing the token as fast as it can
        while not stop.is_set():
            current = store.get_upstream_credential("u1", "notes")
            if current is None:
                return
            store.swap_upstream_credential(dataclasses.replace(current, version=current.version + 1), current.version)

    threads = [threading.Thread(target=refresher) for _ in range(3)]
    for th in threads:
        th.start()
    time.sleep(0.2)
    try:
        gone = store.delete_upstream_credential("u1", "notes")
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert store.get_upstream_credential("u1", "notes") is None
    assert gone is None or gone.version >= 1
    store.close()


def test_replicas_creating_the_key_file_together_share_one_key(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)
    got: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            got.append(load_box(tmp_path, {}).current)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and len(set(got)) == 1 and len(got) == 8
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temporary file left behind


# -- the running portal -------------------------------------------------------------------------------------


async def test_forged_posts_other_users_rows_and_redirects(tmp_path: Path, idp: OAuthProvider) -> None:
    async with notes_portal(tmp_path, idp) as (portal, _):
        with sign_in(portal, "alice") as alice, sign_in(portal, "bob") as bob, Flow(portal) as anonymous:
            assert link(alice, idp, "alice").status_code == 303
            page = bob.browser.get("/account/credentials")
            bob_csrf = dict(form_fields(forms(page.text)[-1]))["csrf"]
            # bob removes "his" credential for notes: alice's row is untouched (no ids to tamper with)
            assert post_form(bob.browser, "/account/credentials/notes/delete", [("csrf", bob_csrf)]).status_code == 303
            uid = portal.portal.store.find_user("alice").id  # type: ignore[union-attr]
            assert portal.portal.store.get_upstream_credential(uid, "notes") is not None
            # no CSRF token, a token of another session, signed out, an unknown server
            for who, fields, path, status in (
                (bob, [], "/account/credentials/notes/key", 403),
                (alice, [("csrf", bob_csrf), ("scheme", "oauth2"), ("value", "x" * 20)],
                 "/account/credentials/notes/key", 403),
                (alice, [("csrf", bob_csrf)], "/upstream/notes/link", 403),
                (alice, [("csrf", bob_csrf)], "/account/credentials/notes/delete", 403),
                (anonymous, [], "/upstream/notes/link", 303),
                (bob, [("csrf", bob_csrf)], "/upstream/nope/link", 404),
                (bob, [("csrf", bob_csrf)], "/account/credentials/..%2Fnotes/delete", 404),
            ):  # fmt: skip
                r = post_form(who.browser, path, fields)
                assert r.status_code == status, (path, r.status_code, r.text[:200])
                if status == 303:
                    assert r.headers["location"].startswith("/login?next=")
            assert portal.portal.store.get_upstream_credential(uid, "notes") is not None
            # a GET cannot change anything
            assert alice.browser.get("/upstream/notes/link").status_code == 405
            # the callback never redirects where the request says
            r = alice.browser.get("/upstream/notes/callback?state=x&code=y&next=https://evil.example/")
            assert r.status_code == 400 and "evil.example" not in r.headers.get("location", "")
            r = anonymous.browser.get("/upstream/notes/callback?state=x&code=y")
            assert r.status_code == 401
            assert anonymous.browser.get("/upstream/nope/callback?state=x").status_code == 404


async def test_the_wrong_key_after_a_restart_is_reported_and_never_misused(tmp_path: Path, idp: OAuthProvider) -> None:
    async with notes_portal(tmp_path, idp) as (portal, _):
        with sign_in(portal, "alice") as alice:
            assert link(alice, idp, "alice").status_code == 303
        assert portal.portal.extras.warnings == []
        uid = portal.portal.store.find_user("alice").id  # type: ignore[union-attr]
    (tmp_path / "data" / KEY_FILE).write_text(generate_key() + "\n")  # the key file was lost and replaced
    config = load_portal_config(tmp_path / "portal.toml")
    again = build_portal(config, sandbox=LocalSandbox(), env={SECRET_VAR: "s" * 24})
    try:
        assert len(again.extras.warnings) == 1
        assert "1 stored credential(s) are sealed under a key this portal does not have" in again.extras.warnings[0]
        assert "WARNING: 1 stored credential(s)" in again.banner()
        assert again.extras.resolver is not None
        source = await again.extras.resolver.credentials_for(uid, "notes")
        assert source is not None
        request = UpstreamRequest(operation="getMe", method="GET", url="/api/me", security=(("oauth2",),))
        with pytest.raises(UpstreamError, match="cannot be read by the portal any more") as err:
            await source.apply(request)
        assert err.value.code == ERR_UNREADABLE and list(source.secrets()) == []
    finally:
        again.store.close()


def test_a_multi_tenant_provider_only_lets_allowed_domains_in(tmp_path: Path, idp: OAuthProvider) -> None:
    with oidc_portal(tmp_path, idp, create_users=True, extra='allowed_email_domains = ["elsewhere.test"]\n') as portal:
        with Flow(portal) as flow:
            r = sign_in_at_provider(flow, idp, "alice")
            assert r.status_code == 400 and "allowed domain" in r.text
            assert signed_in_as(flow) is None
        assert portal.portal.store.list_external_identities() == []
    with oidc_portal(tmp_path / "b", idp, create_users=True, extra='allowed_email_domains = ["example.test"]\n') \
            as portal:  # fmt: skip
        with Flow(portal) as flow:
            assert sign_in_at_provider(flow, idp, "alice").status_code == 303
            assert signed_in_as(flow) == "alice"


def test_oidc_sign_in_starts_are_limited_per_address(tmp_path: Path, idp: OAuthProvider) -> None:
    from codemode_portal._oidc import LOGIN_STARTS_PER_WINDOW

    with oidc_portal(tmp_path, idp, create_users=True) as portal:
        with Flow(portal) as flow:
            for _ in range(LOGIN_STARTS_PER_WINDOW):
                to_provider(flow)
            flooded = flow.browser.get("/login/oidc")
            assert flooded.status_code == 503 and "Too many sign-in attempts" in flooded.text
        store = portal.portal.store
        assert isinstance(store, SqlStore)
        from codemode_portal._store import _schema
        from sqlalchemy import func, select

        with store._engine.connect() as c:
            rows = c.execute(select(func.count()).select_from(_schema.pending_flows)).scalar_one()
        assert rows == LOGIN_STARTS_PER_WINDOW

