"""The storage seam, one behaviour suite run on the in-memory fake, SQLite and a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal import MemoryStore, SqlStore, Store, StoreConflict, StoreError
from codemode_portal._store import AuditRow, AuthCode, Client, Grant, TokenRecord, User
from codemode_portal._store._migrate import current_revision, head_revision

NOW = 1_800_000_000.0


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "sqlite":
        s = SqlStore(f"sqlite:///{tmp_path / 'portal.db'}")
    else:
        s = SqlStore(request.getfixturevalue("postgres_db_url"))
    try:
        yield s
    finally:
        s.close()


def user(name: str = "alice", uid: str = "u1") -> User:
    return User(id=uid, name=name, password_hash="$argon2id$x", created_at=NOW)


def grant(gid: str = "g1", uid: str = "u1") -> Grant:
    return Grant(
        id=gid,
        user_id=uid,
        client_id="c1",
        server="petstore",
        resource="http://x/mcp/petstore",
        scopes=("petstore:read", "petstore:write"),
        created_at=NOW,
    )


def token(h: str, kind: Any = "access", gid: str = "g1", expires: float = NOW + 600) -> TokenRecord:
    return TokenRecord(
        hash=h,
        kind=kind,
        grant_id=gid,
        client_id="c1",
        user_id="u1",
        server="petstore",
        resource="http://x/mcp/petstore",
        scopes=("petstore:read",),
        created_at=NOW,
        expires_at=expires,
    )


def test_users(store: Store) -> None:
    store.create_user(user())
    with pytest.raises(StoreConflict):
        store.create_user(user(uid="u2"))  # same name
    found = store.find_user("alice")
    assert found == user()
    assert store.get_user("u1") == found
    assert store.find_user("bob") is None
    store.set_password("u1", "$argon2id$y")
    assert store.find_user("alice").password_hash == "$argon2id$y"  # type: ignore[union-attr]
    assert [u.name for u in store.list_users()] == ["alice"]


def test_clients_insert_and_replace(store: Store) -> None:
    c = Client(
        client_id="https://app.example/cimd.json",
        name="App",
        redirect_uris=("https://app.example/cb",),
        auth_method="none",
        kind="cimd",
        created_at=NOW,
        metadata_json='{"client_name": "App"}',
    )
    store.save_client(c)
    assert store.find_client(c.client_id) == c
    c2 = Client(**{**c.__dict__, "name": "App 2", "redirect_uris": ("https://app.example/cb", "http://127.0.0.1/cb")})
    store.save_client(c2)
    assert store.find_client(c.client_id) == c2
    assert len(store.list_clients()) == 1
    assert store.find_client("nope") is None


def test_grant_revocation_revokes_every_token_and_code(store: Store) -> None:
    store.create_user(user())
    store.create_grant(grant())
    store.create_grant(grant("g2"))
    store.save_tokens(token("a1"), token("r1", "refresh"), token("a2", gid="g2"))
    store.save_code(
        AuthCode(
            hash="k1",
            grant_id="g1",
            client_id="c1",
            redirect_uri="http://127.0.0.1/cb",
            code_challenge="x" * 43,
            resource="r",
            scopes=("s",),
            expires_at=NOW + 60,
        )
    )
    assert store.find_token("a1").usable(NOW)  # type: ignore[union-attr]
    assert store.revoke_grant("g1", NOW + 1) is True
    assert store.revoke_grant("g1", NOW + 2) is False
    view = store.find_token("a1")
    assert view is not None and view.grant_revoked and not view.usable(NOW + 3)
    assert not store.find_token("r1").usable(NOW + 3)  # type: ignore[union-attr]
    assert store.find_token("a2").usable(NOW + 3)  # type: ignore[union-attr]  (other grant untouched)
    assert store.take_code("k1", NOW + 3) is False  # the grant's codes are spent too
    assert [g.id for g in store.list_grants(user_id="u1")] == ["g2"]
    assert {g.id for g in store.list_grants(active_only=False)} == {"g1", "g2"}


def test_code_can_be_taken_once(store: Store) -> None:
    store.create_user(user())
    store.create_grant(grant())
    code = AuthCode(
        hash="k1",
        grant_id="g1",
        client_id="c1",
        redirect_uri="http://127.0.0.1/cb",
        code_challenge="x" * 43,
        resource="http://x/mcp/petstore",
        scopes=("petstore:read",),
        expires_at=NOW + 60,
    )
    store.save_code(code)
    assert store.find_code("k1") == code
    assert store.take_code("k1", NOW) is True
    assert store.take_code("k1", NOW) is False
    assert store.find_code("k1").used_at == NOW  # type: ignore[union-attr]
    assert store.take_code("unknown", NOW) is False


def test_refresh_rotation_is_single_use(store: Store) -> None:
    store.create_user(user())
    store.create_grant(grant())
    store.save_tokens(token("r1", "refresh", expires=NOW + 3600))
    assert store.rotate_refresh("r1", (token("a2"), token("r2", "refresh")), NOW + 1) is True
    assert store.rotate_refresh("r1", (token("a3"), token("r3", "refresh")), NOW + 2) is False  # replay
    assert store.find_token("a3") is None and store.find_token("r3") is None
    assert store.find_token("r1").token.used_at == NOW + 1  # type: ignore[union-attr]
    assert store.rotate_refresh("a2", (), NOW + 3) is False  # an access token is not a refresh token
    store.revoke_grant("g1", NOW + 4)
    assert store.rotate_refresh("r2", (token("a4"),), NOW + 5) is False  # revoked grant


def test_concurrent_rotation_has_one_winner(store: Store) -> None:
    store.create_user(user())
    store.create_grant(grant())
    store.save_tokens(token("r1", "refresh", expires=NOW + 3600))
    wins: list[bool] = []
    barrier = threading.Barrier(6)

    def go(i: int) -> None:
        barrier.wait()
        wins.append(store.rotate_refresh("r1", (token(f"a{i}"), token(f"n{i}", "refresh")), NOW + i))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 5 + [True]
    assert len([t for t in store.list_tokens() if t.hash.startswith("a")]) == 1


def test_token_revocation_and_listing(store: Store) -> None:
    store.create_user(user())
    store.create_grant(grant())
    store.save_tokens(token("a1"), token("a2", expires=NOW - 1), token("r1", "refresh"))
    store.revoke_token("a1", NOW)
    assert store.find_token("a1").token.revoked_at == NOW  # type: ignore[union-attr]
    assert {t.hash for t in store.list_tokens(active_at=NOW)} == {"r1"}
    assert {t.hash for t in store.list_tokens()} == {"a1", "a2", "r1"}
    with pytest.raises(StoreConflict):
        store.save_tokens(token("r1", "refresh"))


def test_sessions_rate_events_secrets(store: Store) -> None:
    store.create_user(user())
    store.create_session("s1", "u1", NOW + 10)
    assert store.find_session("s1", NOW) == "u1"
    assert store.find_session("s1", NOW + 11) is None
    store.delete_session("s1")
    assert store.find_session("s1", NOW) is None
    for i in range(3):
        store.add_rate_event("login:user:alice", NOW + i)
    store.add_rate_event("login:ip:1.2.3.4", NOW)
    assert store.count_rate_events("login:user:alice", NOW + 1) == 2
    store.clear_rate_events("login:user:alice")
    assert store.count_rate_events("login:user:alice", 0) == 0
    assert store.count_rate_events("login:ip:1.2.3.4", 0) == 1
    assert store.get_or_create_secret("csrf", "first") == "first"
    assert store.get_or_create_secret("csrf", "second") == "first"


def test_ending_a_users_sessions_and_disabling_them(store: Store) -> None:
    store.create_user(user())
    store.create_user(user("bob", "u2"))
    for h, uid in (("s1", "u1"), ("s2", "u1"), ("s3", "u2")):
        store.create_session(h, uid, NOW + 10)
    assert store.end_sessions("u1") == 2
    assert store.find_session("s1", NOW) is None and store.find_session("s2", NOW) is None
    assert store.find_session("s3", NOW) == "u2"  # another user's session is untouched
    assert store.end_sessions("u1") == 0
    store.set_disabled("u1", True)
    assert store.get_user("u1").disabled and not store.get_user("u2").disabled  # type: ignore[union-attr]
    store.set_disabled("u1", False)
    assert not store.get_user("u1").disabled  # type: ignore[union-attr]


def test_audit_rows_filter_and_order(store: Store) -> None:
    rows = [
        AuditRow(
            at=NOW + 2,
            event="upstream_call",
            user_id="u1",
            client_id="c1",
            server="petstore",
            operation="pet.add",
            status="200",
            detail="POST 12 ms, 1 attempt(s)",
        ),
        AuditRow(at=NOW + 1, event="token_issued", user_id="u1", client_id="c1", server="kinto"),
        AuditRow(at=NOW - 100, event="login_failed", detail="bob"),
    ]
    store.record_audit(rows)
    store.record_audit([])
    got = store.list_audit(since=NOW)
    assert [r.event for r in got] == ["token_issued", "upstream_call"]
    assert got[1].operation == "pet.add" and got[1].status == "200" and got[1].id is not None
    assert [r.event for r in store.list_audit(server="petstore")] == ["upstream_call"]
    assert len(store.list_audit(limit=1)) == 1


def test_purge_removes_expired_rows(store: Store) -> None:
    store.create_user(user())
    store.create_grant(grant())
    store.save_tokens(token("old", expires=NOW - 10), token("new", expires=NOW + 10))
    store.create_session("s", "u1", NOW - 1)
    store.add_rate_event("k", NOW - 2 * 86_400)
    assert store.purge(NOW) == 3
    assert store.find_token("old") is None and store.find_token("new") is not None


def test_purge_closes_dead_grants_and_drops_unused_clients_and_old_audit(store: Store) -> None:
    day = 86_400.0
    store.create_user(user())
    old = NOW - 2 * day
    dead, refreshable, pending, young = (replace(grant(g), created_at=old) for g in ("dead", "refresh", "code", "y"))
    for g in (dead, refreshable, pending, replace(young, created_at=NOW - 60)):
        store.create_grant(g)
    store.save_tokens(token("t-dead", gid="dead", expires=NOW - 10), token("t-ref", kind="refresh", gid="refresh"))
    store.save_code(AuthCode(hash="c1", grant_id="code", client_id="c1", redirect_uri="http://x/cb",
                             code_challenge="x", resource="r", scopes=(), expires_at=NOW + 30))  # fmt: skip
    for cid, kind, created in (("c1", "dcr", old), ("spam-dcr", "dcr", NOW - 40 * day), ("new-dcr", "dcr", old),
                               ("https://doc.example/c", "cimd", old), ("https://doc.example/new", "cimd", NOW)):
        store.save_client(Client(client_id=cid, name=cid, redirect_uris=("http://x/cb",), auth_method="none",
                                 kind=kind, created_at=created))  # fmt: skip
    store.record_audit([AuditRow(at=NOW - 400 * day, event="login"), AuditRow(at=NOW - day, event="login")])
    store.purge(NOW, unused_clients_before=NOW - 30 * day, audit_before=NOW - 365 * day)
    revoked = {g.id for g in store.list_grants(active_only=False) if g.revoked_at is not None}
    assert revoked == {"dead"}  # a live refresh token, a usable code, or a young grant keep theirs
    assert {g.id for g in store.list_grants(user_id="u1")} == {"refresh", "code", "y"}  # what /account lists
    kept = {c.client_id for c in store.list_clients()}
    assert kept == {"c1", "new-dcr", "https://doc.example/new"}  # c1 has grants; the others are recent enough
    assert [r.at for r in store.list_audit(since=0)] == [NOW - day]
    store.purge(NOW)  # without retention settings: no registered client and no audit row goes
    assert {c.client_id for c in store.list_clients()} == kept and len(store.list_audit(since=0)) == 1


def test_sqlite_is_migrated_to_head_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    first = SqlStore(url)
    assert current_revision(first._engine) == head_revision()
    first.create_user(user())
    first.close()
    again = SqlStore(url)  # a restart keeps the data and does not migrate again
    assert again.find_user("alice") is not None
    again.close()


def test_migrations_match_the_schema_metadata(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from codemode_portal._store._schema import metadata

    store = SqlStore(f"sqlite:///{tmp_path / 'p.db'}")
    with store._engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    store.close()
    assert diff == []


def test_postgres_migrates_under_a_lock_from_several_replicas(postgres_db_url: str) -> None:
    errors: list[BaseException] = []
    stores: list[SqlStore] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            stores.append(SqlStore(postgres_db_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert current_revision(stores[0]._engine) == head_revision()
    stores[0].create_user(user())
    assert all(s.find_user("alice") is not None for s in stores)
    for s in stores:
        s.close()


def test_a_bad_database_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not supported"):
        SqlStore("mysql://x/y")
    with pytest.raises(StoreError, match="cannot open the database"):
        SqlStore(f"sqlite:///{tmp_path / 'missing-dir' / 'p.db'}")


def test_an_unreachable_postgres_is_a_clear_error() -> None:
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot open the database"):
        SqlStore("postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=2")
    assert time.monotonic() - started < 30
