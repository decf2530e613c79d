"""The storage seam for per-user upstream credentials, pending OAuth flows and external identities:
one behaviour suite on the in-memory fake, SQLite and a real PostgreSQL; and the migration that
adds them, from an empty database and from the previous head, on both backends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal import MemoryStore, SqlStore, Store, StoreConflict
from codemode_portal._store import ExternalIdentity, PendingFlow, UpstreamCredential, User
from codemode_portal._store._migrate import current_revision, head_revision, upgrade
from codemode_portal._store._sql import make_engine
from sqlalchemy import inspect, text

NOW = 1_800_000_000.0
PREVIOUS_HEAD = "0001"  # the revision before the upstream-credentials tables


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "sqlite":
        s = SqlStore(f"sqlite:///{tmp_path / 'portal.db'}")
    else:
        s = SqlStore(request.getfixturevalue("postgres_db_url"))
    s.create_user(User(id="u1", name="alice", password_hash="x", created_at=NOW))
    s.create_user(User(id="u2", name="bob", password_hash="x", created_at=NOW))
    try:
        yield s
    finally:
        s.close()


def cred(user: str = "u1", server: str = "notes", **kw: object) -> UpstreamCredential:
    base = UpstreamCredential(user_id=user, server=server, kind="oauth", scheme="oauth2", secret="cmk1.k.AAA",
                              refresh="cmk1.k.BBB", expires_at=NOW + 60, scopes=("notes:read", "notes:write"),
                              created_at=NOW, updated_at=NOW)  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def flow(state: str = "h1", **kw: object) -> PendingFlow:
    base = PendingFlow(state_hash=state, purpose="link", session_hash="s1", verifier="cmk1.k.CCC", created_at=NOW,
                       expires_at=NOW + 600, server="notes", user_id="u1", next_url="/account/credentials")  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def test_credentials_are_per_user_and_server(store: Store) -> None:
    store.put_upstream_credential(cred())
    store.put_upstream_credential(cred(user="u2", secret="cmk1.k.BOB"))
    store.put_upstream_credential(cred(server="other", kind="key", refresh=None, expires_at=None, scopes=()))
    got = store.get_upstream_credential("u1", "notes")
    assert got == cred()
    assert store.get_upstream_credential("u2", "notes") == cred(user="u2", secret="cmk1.k.BOB")
    assert store.get_upstream_credential("u2", "other") is None
    assert [(c.user_id, c.server) for c in store.list_upstream_credentials()] == [
        ("u1", "notes"), ("u1", "other"), ("u2", "notes")]  # fmt: skip
    assert [c.server for c in store.list_upstream_credentials(user_id="u2")] == ["notes"]
    # put replaces the user's credential for that server
    store.put_upstream_credential(cred(kind="key", secret="cmk1.k.NEW", refresh=None, version=1))
    replaced = store.get_upstream_credential("u1", "notes")
    assert replaced is not None and replaced.kind == "key" and replaced.refresh is None
    assert store.delete_upstream_credential("u1", "notes") == replaced
    assert store.delete_upstream_credential("u1", "notes") is None
    assert store.get_upstream_credential("u1", "notes") is None


def test_refresh_lease_and_compare_and_swap(store: Store) -> None:
    store.put_upstream_credential(cred(version=3))
    assert not store.claim_upstream_refresh("u1", "notes", 2, NOW + 30, NOW)  # stale version
    assert store.claim_upstream_refresh("u1", "notes", 3, NOW + 30, NOW)
    assert not store.claim_upstream_refresh("u1", "notes", 3, NOW + 30, NOW + 1)  # leased by someone else
    assert store.claim_upstream_refresh("u1", "notes", 3, NOW + 90, NOW + 31)  # the lease ran out
    fresh = cred(version=4, secret="cmk1.k.NEW", lease_until=None, updated_at=NOW + 32)
    assert not store.swap_upstream_credential(fresh, expected_version=2)
    assert store.swap_upstream_credential(fresh, expected_version=3)
    assert store.get_upstream_credential("u1", "notes") == fresh
    assert not store.swap_upstream_credential(replace(fresh, version=5), expected_version=3)  # lost the race
    assert not store.swap_upstream_credential(cred(user="u2"), expected_version=1)  # nothing to swap


def test_concurrent_claims_have_one_winner(store: Store) -> None:
    store.put_upstream_credential(cred())
    wins: list[bool] = []
    barrier = threading.Barrier(6)

    def claim() -> None:
        barrier.wait()
        wins.append(store.claim_upstream_refresh("u1", "notes", 1, NOW + 30, NOW))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(wins) == [False] * 5 + [True]


def test_pending_flows_are_taken_once_and_expire(store: Store) -> None:
    store.save_pending_flow(flow("h1"), NOW)
    store.save_pending_flow(flow("h2", purpose="login", server=None, user_id=None, nonce="n"), NOW)
    store.save_pending_flow(flow("old", expires_at=NOW + 1), NOW)
    with pytest.raises(StoreConflict):
        store.save_pending_flow(flow("h1"), NOW)
    assert store.take_pending_flow("h1", NOW + 1) == flow("h1")
    assert store.take_pending_flow("h1", NOW + 1) is None  # a replayed callback finds nothing
    assert store.take_pending_flow("old", NOW + 2) is None  # expired
    assert store.take_pending_flow("nope", NOW) is None
    got = store.take_pending_flow("h2", NOW)
    assert got is not None and got.purpose == "login" and got.nonce == "n" and got.user_id is None
    # saving drops flows that expired
    store.save_pending_flow(flow("a", expires_at=NOW + 5), NOW)
    store.save_pending_flow(flow("b"), NOW + 10)
    assert store.take_pending_flow("a", NOW) is None


def test_concurrent_takes_of_one_state_have_one_winner(store: Store) -> None:
    store.save_pending_flow(flow("h"), NOW)
    got: list[PendingFlow | None] = []
    barrier = threading.Barrier(6)

    def take() -> None:
        barrier.wait()
        got.append(store.take_pending_flow("h", NOW))

    threads = [threading.Thread(target=take) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(1 for g in got if g is not None) == 1


def test_external_identities(store: Store) -> None:
    ident = ExternalIdentity(issuer="https://idp", subject="user-alice", user_id="u1", created_at=NOW)
    store.add_external_identity(ident)
    with pytest.raises(StoreConflict):
        store.add_external_identity(replace(ident, user_id="u2"))
    assert store.find_external_identity("https://idp", "user-alice") == ident
    assert store.find_external_identity("https://other", "user-alice") is None
    assert store.find_external_identity("https://idp", "USER-ALICE") is None
    store.add_external_identity(replace(ident, subject="user-bob", user_id="u2", created_at=NOW + 1))
    assert [i.subject for i in store.list_external_identities()] == ["user-alice", "user-bob"]
    assert [i.subject for i in store.list_external_identities(user_id="u2")] == ["user-bob"]
    store.touch_external_identity("https://idp", "user-alice", NOW + 5)
    found = store.find_external_identity("https://idp", "user-alice")
    assert found is not None and found.last_login_at == NOW + 5
    assert store.delete_external_identity("https://idp", "user-alice")
    assert not store.delete_external_identity("https://idp", "user-alice")


# -- the migration -----------------------------------------------------------------------------

NEW_TABLES = {"upstream_credentials", "pending_flows", "external_identities"}


def _upgrade_from_previous_head(url: str) -> None:
    engine = make_engine(url)
    try:
        upgrade(engine, PREVIOUS_HEAD)
        assert current_revision(engine) == PREVIOUS_HEAD
        assert not NEW_TABLES & set(inspect(engine).get_table_names())
        with engine.begin() as c:
            c.execute(text("INSERT INTO users (id, name, password_hash, is_admin, disabled, created_at) "
                           "VALUES ('u1', 'alice', 'x', false, false, 1)"))  # fmt: skip
    finally:
        engine.dispose()
    store = SqlStore(url)  # opening migrates to head, keeping the data
    try:
        assert current_revision(store._engine) == head_revision()
        assert NEW_TABLES <= set(inspect(store._engine).get_table_names())
        assert store.find_user("alice") is not None
        store.put_upstream_credential(cred())
        assert store.get_upstream_credential("u1", "notes") == cred()
    finally:
        store.close()


def test_sqlite_upgrades_from_the_previous_head(tmp_path: Path) -> None:
    _upgrade_from_previous_head(f"sqlite:///{tmp_path / 'p.db'}")


def test_postgres_upgrades_from_the_previous_head(postgres_db_url: str) -> None:
    _upgrade_from_previous_head(postgres_db_url)


def test_postgres_from_empty_matches_the_schema_metadata(postgres_db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from codemode_portal._store._schema import metadata

    store = SqlStore(postgres_db_url)
    with store._engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    store.close()
    assert diff == []


def test_deleting_a_user_deletes_their_credentials_and_identities(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        store.create_user(User(id="u1", name="alice", password_hash="x", created_at=NOW))
        store.put_upstream_credential(cred())
        store.add_external_identity(ExternalIdentity(issuer="i", subject="s", user_id="u1", created_at=NOW))
        with store._engine.begin() as c:
            c.execute(text("DELETE FROM users WHERE id = 'u1'"))
        assert store.list_upstream_credentials() == []
        assert store.list_external_identities() == []
    finally:
        store.close()
