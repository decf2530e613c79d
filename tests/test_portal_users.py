"""Portal users: argon2id hashes, login refusals that never say whether a user exists, and login
rate limits per user and per address that live in the store (shared by replicas)."""

from __future__ import annotations

import pytest

pytest.importorskip("argon2", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal import LoginRefused, MemoryStore, PortalError, PortalSettings, Users
from codemode_portal._users import hash_password, verify_password

NOW = 1_800_000_000.0


@pytest.fixture
def users() -> Users:
    return Users(
        MemoryStore(), PortalSettings(login_failures_per_user=3, login_failures_per_ip=5, login_window_seconds=60)
    )


def test_passwords_are_argon2id_and_verify() -> None:
    h = hash_password("correct horse")
    assert h.startswith("$argon2id$") and "correct horse" not in h
    assert verify_password(h, "correct horse")
    assert not verify_password(h, "wrong horse")
    assert not verify_password("not a hash", "x")


def test_add_and_authenticate(users: Users) -> None:
    alice = users.add("alice", "s3cret-pass")
    assert users.store.find_user("alice") == alice
    assert users.authenticate("alice", "s3cret-pass", "10.0.0.1", NOW).id == alice.id
    with pytest.raises(PortalError, match="already exists"):
        users.add("alice", "another-pass")
    with pytest.raises(PortalError, match="not allowed"):
        users.add("a b", "another-pass")
    with pytest.raises(PortalError, match="8 to 1024"):
        users.add("bob", "short")


def test_refusals_look_the_same_for_unknown_users(users: Users) -> None:
    users.add("alice", "s3cret-pass")
    with pytest.raises(LoginRefused) as wrong_password:
        users.authenticate("alice", "nope-nope", "10.0.0.1", NOW)
    with pytest.raises(LoginRefused) as unknown_user:
        users.authenticate("mallory", "nope-nope", "10.0.0.2", NOW)
    assert wrong_password.value.message == unknown_user.value.message == "Wrong user name or password."


def test_per_user_limit_then_window_expiry(users: Users) -> None:
    users.add("alice", "s3cret-pass")
    for i in range(3):
        with pytest.raises(LoginRefused, match="Wrong"):
            users.authenticate("alice", "guess", f"10.0.0.{i}", NOW)
    with pytest.raises(LoginRefused, match="Too many") as limited:
        users.authenticate("alice", "s3cret-pass", "10.0.0.9", NOW)  # even the right password, from elsewhere
    assert limited.value.code == "portal.login.limited" and limited.value.retry_after == 60
    assert users.authenticate("alice", "s3cret-pass", "10.0.0.9", NOW + 61).name == "alice"


def test_per_address_limit_across_user_names(users: Users) -> None:
    users.add("alice", "s3cret-pass")
    for i in range(5):
        with pytest.raises(LoginRefused, match="Wrong"):
            users.authenticate(f"user{i}", "guess", "10.9.9.9", NOW)
    with pytest.raises(LoginRefused, match="Too many"):
        users.authenticate("alice", "s3cret-pass", "10.9.9.9", NOW)
    assert users.authenticate("alice", "s3cret-pass", "10.0.0.1", NOW).name == "alice"


def test_success_clears_the_users_failures(users: Users) -> None:
    users.add("alice", "s3cret-pass")
    for _ in range(2):
        with pytest.raises(LoginRefused):
            users.authenticate("alice", "guess", "10.0.0.1", NOW)
    users.authenticate("alice", "s3cret-pass", "10.0.0.1", NOW)
    for _ in range(2):
        with pytest.raises(LoginRefused, match="Wrong"):
            users.authenticate("alice", "guess", "10.0.0.1", NOW)


def test_limits_are_shared_through_the_store(users: Users) -> None:
    replica = Users(users.store, users.settings)  # a second portal on the same database
    users.add("alice", "s3cret-pass")
    for _ in range(3):
        with pytest.raises(LoginRefused):
            replica.authenticate("alice", "guess", "10.0.0.1", NOW)
    with pytest.raises(LoginRefused, match="Too many"):
        users.authenticate("alice", "s3cret-pass", "10.0.0.2", NOW)


def test_huge_passwords_are_refused_cheaply(users: Users) -> None:
    users.add("alice", "s3cret-pass")
    with pytest.raises(LoginRefused, match="Wrong"):
        users.authenticate("alice", "x" * 5_000_000, "10.0.0.1", NOW)


def test_first_start_creates_an_admin_once(users: Users) -> None:
    password = users.ensure_admin()
    assert password is not None and len(password) >= 20
    admin = users.store.find_user("admin")
    assert admin is not None and admin.is_admin
    assert users.authenticate("admin", password, "127.0.0.1", NOW).is_admin
    assert users.ensure_admin() is None
