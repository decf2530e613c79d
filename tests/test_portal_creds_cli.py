"""``codemode portal credentials …`` against a real SQLite database and key file, as an operator runs
them: list (never a secret), delete, and the key rotation procedure (rotate-key, restart, reseal,
drop-old-keys) keeping every stored credential readable at each step."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal import SqlStore
from codemode_portal._box import ENV_KEYS, KEY_FILE, SealError, generate_key, load_box
from codemode_portal._store import UpstreamCredential, User
from codemode_portal._upstream_sources import seal_context

CODEMODE = str(Path(sys.executable).with_name("codemode"))
SECRET = "sk-live-the-users-own-key-0123456789"
REFRESH = "rt-the-users-refresh-token-9876543210"


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != ENV_KEYS}
    return subprocess.run([CODEMODE, "portal", *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**environ, **(env or {})})  # fmt: skip


@pytest.fixture
def portal_dir(tmp_path: Path) -> Path:
    (tmp_path / "portal.toml").write_text("[portal]\nport = 8123\n")
    data = tmp_path / ".codemode-portal"
    data.mkdir()
    store = SqlStore(f"sqlite:///{data / 'portal.db'}")
    box = load_box(data, {})
    now = time.time()
    for uid, name in (("u1", "alice"), ("u2", "bob")):
        store.create_user(User(id=uid, name=name, password_hash="x", created_at=now))
    store.put_upstream_credential(UpstreamCredential(
        user_id="u1", server="notes", kind="oauth", scheme="oauth2",
        secret=box.seal(SECRET, context=seal_context("u1", "notes", "secret")),
        refresh=box.seal(REFRESH, context=seal_context("u1", "notes", "refresh")),
        expires_at=now + 60, scopes=("notes:read",), created_at=now, updated_at=now,
    ))  # fmt: skip
    store.put_upstream_credential(UpstreamCredential(
        user_id="u2", server="keys", kind="key", scheme="bearer",
        secret=box.seal(SECRET + "-bob", context=seal_context("u2", "keys", "secret")), created_at=now,
        updated_at=now,
    ))  # fmt: skip
    store.close()
    return tmp_path


def opened(portal_dir: Path) -> list[str]:
    data = portal_dir / ".codemode-portal"
    box = load_box(data, {}, create=False)
    store = SqlStore(f"sqlite:///{data / 'portal.db'}")
    try:
        out = []
        for c in store.list_upstream_credentials():
            out.append(box.open(c.secret, context=seal_context(c.user_id, c.server, "secret")))
            if c.refresh:
                out.append(box.open(c.refresh, context=seal_context(c.user_id, c.server, "refresh")))
        return out
    finally:
        store.close()


def test_list_shows_who_has_what_never_the_secret(portal_dir: Path) -> None:
    out = run("credentials", "list", cwd=portal_dir)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("USER\tSERVER\tKIND")
    assert lines[1].startswith("alice\tnotes\toauth\toauth2\tok\tnotes:read\t")
    assert lines[2].startswith("bob\tkeys\tkey\tbearer\tok\t-\t")
    assert SECRET not in out.stdout and "cmk1." not in out.stdout


def test_delete_one_users_credential(portal_dir: Path) -> None:
    out = run("credentials", "delete", "bob", "keys", cwd=portal_dir)
    assert out.returncode == 0 and "deleted bob's credential for keys" in out.stdout, out.stderr
    assert "has no credential" in run("credentials", "delete", "bob", "keys", cwd=portal_dir).stdout
    nobody = run("credentials", "delete", "carol", "keys", cwd=portal_dir)
    assert nobody.returncode == 1 and "no user named 'carol'" in nobody.stderr
    audit = run("audit", cwd=portal_dir)
    assert "upstream_unlinked" in audit.stdout and SECRET not in audit.stdout


def test_key_rotation_keeps_every_credential_readable(portal_dir: Path) -> None:
    data = portal_dir / ".codemode-portal"
    before = load_box(data, {}, create=False)
    rotated = run("credentials", "rotate-key", cwd=portal_dir)
    assert rotated.returncode == 0, rotated.stderr
    assert "old key(s) kept for reading" in rotated.stdout and "reseal" in rotated.stdout
    assert sorted(opened(portal_dir)) == sorted([SECRET, REFRESH, SECRET + "-bob"])  # old rows still open
    early = run("credentials", "drop-old-keys", cwd=portal_dir)
    assert early.returncode == 1 and "still sealed under an old key" in early.stderr
    resealed = run("credentials", "reseal", cwd=portal_dir)
    assert resealed.returncode == 0 and "re-sealed 2 credential(s)" in resealed.stdout, resealed.stderr
    assert "re-sealed 0 credential(s)" in run("credentials", "reseal", cwd=portal_dir).stdout
    dropped = run("credentials", "drop-old-keys", cwd=portal_dir)
    assert dropped.returncode == 0 and before.current in dropped.stdout, dropped.stderr
    after = load_box(data, {}, create=False)
    assert after.key_ids == (after.current,) and after.current != before.current
    assert sorted(opened(portal_dir)) == sorted([SECRET, REFRESH, SECRET + "-bob"])
    assert SECRET.encode() not in (data / KEY_FILE).read_bytes()


def test_reseal_with_keys_from_the_environment(portal_dir: Path) -> None:
    data = portal_dir / ".codemode-portal"
    old_key = next(line for line in (data / KEY_FILE).read_text().splitlines() if not line.startswith("#"))
    new_key = generate_key()
    env = {ENV_KEYS: f"{new_key},{old_key}"}
    refused = run("credentials", "rotate-key", cwd=portal_dir, env=env)
    assert refused.returncode == 1 and ENV_KEYS in refused.stderr
    out = run("credentials", "reseal", cwd=portal_dir, env=env)
    assert out.returncode == 0 and "re-sealed 2" in out.stdout, out.stderr
    only_new = load_box(data, {ENV_KEYS: new_key})
    store = SqlStore(f"sqlite:///{data / 'portal.db'}")
    try:
        cred = store.get_upstream_credential("u1", "notes")
        assert cred is not None
        assert only_new.open(cred.secret, context=seal_context("u1", "notes", "secret")) == SECRET
        with pytest.raises(SealError):
            load_box(data, {}).open(cred.secret, context=seal_context("u1", "notes", "secret"))
    finally:
        store.close()
    bad = run("credentials", "reseal", cwd=portal_dir, env={ENV_KEYS: "not-a-key"})
    assert bad.returncode == 2 and "not a credential key" in bad.stderr and "not-a-key" not in bad.stderr
