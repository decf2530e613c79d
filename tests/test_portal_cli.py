"""``codemode portal`` operator commands against a real SQLite database, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal import SqlStore
from codemode_portal._cli import parse_since
from codemode_portal._store import AuditRow, Client, Grant, TokenRecord

CODEMODE = str(Path(sys.executable).with_name("codemode"))


def run(*args: str, stdin: str = "", cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CODEMODE, "portal", *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.fixture
def portal_dir(tmp_path: Path) -> Path:
    (tmp_path / "portal.toml").write_text("[portal]\nport = 8123\n")
    return tmp_path


def test_user_add_with_password_stdin_and_list(portal_dir: Path) -> None:
    out = run("user", "add", "alice", "--password-stdin", stdin="a-long-password\n", cwd=portal_dir)
    assert out.returncode == 0, out.stderr
    assert "added user alice" in out.stdout
    again = run("user", "add", "alice", "--password-stdin", stdin="a-long-password\n", cwd=portal_dir)
    assert again.returncode == 1 and "error [portal.user.exists]" in again.stderr
    short = run("user", "add", "bob", "--password-stdin", stdin="short\n", cwd=portal_dir)
    assert short.returncode == 1 and "8 to 1024" in short.stderr
    listed = run("user", "list", cwd=portal_dir)
    assert listed.stdout.startswith("alice\tuser\t")
    assert (portal_dir / ".codemode-portal" / "portal.db").exists()


def test_clients_tokens_revoke_audit(portal_dir: Path) -> None:
    assert run("user", "add", "alice", "--password-stdin", stdin="a-long-password\n", cwd=portal_dir).returncode == 0
    store = SqlStore(f"sqlite:///{portal_dir / '.codemode-portal' / 'portal.db'}")
    now = time.time()
    uid = store.find_user("alice").id  # type: ignore[union-attr]
    store.save_client(
        Client(
            client_id="cid-1",
            name="Inspector",
            redirect_uris=("http://127.0.0.1:6274/cb",),
            auth_method="none",
            kind="dcr",
            created_at=now,
        )
    )
    store.create_grant(
        Grant(
            id="grant-1",
            user_id=uid,
            client_id="cid-1",
            server="petstore",
            resource="http://127.0.0.1:8123/mcp/petstore",
            scopes=("petstore:read",),
            created_at=now,
        )
    )
    store.save_tokens(
        TokenRecord(
            hash="h1",
            kind="access",
            grant_id="grant-1",
            client_id="cid-1",
            user_id=uid,
            server="petstore",
            resource="r",
            scopes=("petstore:read",),
            created_at=now,
            expires_at=now + 600,
        )
    )
    store.record_audit(
        [
            AuditRow(
                at=now,
                event="upstream_call",
                user_id=uid,
                client_id="cid-1",
                server="petstore",
                operation="pet.get_by_id",
                status="200",
            ),
            AuditRow(at=now - 7200, event="token_issued", server="kinto"),
        ]
    )
    store.close()
    clients = run("clients", cwd=portal_dir)
    assert "cid-1\tdcr\tInspector\tnone\thttp://127.0.0.1:6274/cb" in clients.stdout
    tokens = run("tokens", cwd=portal_dir)
    assert "grant-1\talice\tcid-1\tpetstore\tpetstore:read\t1 access, 0 refresh" in tokens.stdout
    audit = run("audit", "--since", "1h", cwd=portal_dir)
    assert "upstream_call\t" in audit.stdout and "pet.get_by_id\t200" in audit.stdout
    assert "token_issued" not in audit.stdout
    assert "token_issued" in run("audit", "--since", "3h", "--server", "kinto", cwd=portal_dir).stdout
    revoked = run("revoke", "grant-1", cwd=portal_dir)
    assert revoked.returncode == 0 and "grant grant-1 revoked" in revoked.stdout
    assert "1 access" not in run("tokens", cwd=portal_dir).stdout
    assert "was already revoked" in run("revoke", "grant-1", cwd=portal_dir).stdout
    unknown = run("revoke", "nope", cwd=portal_dir)
    assert unknown.returncode == 1 and "no grant 'nope'" in unknown.stderr
    assert "grant_revoked" in run("audit", cwd=portal_dir).stdout


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "portal.toml").write_text("[portal]\nport = 'eighty'\n")
    out = run("clients", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "portal.toml:2: portal.port: Input should be a valid integer" in out.stderr
    missing = run("clients", cwd=tmp_path / "..")
    assert missing.returncode != 0


def test_parse_since() -> None:
    assert parse_since("90m", 10_000.0) == 10_000.0 - 5400
    assert parse_since("2d", 1e6) == 1e6 - 172_800
    assert parse_since("2026-01-01T00:00:00", 0) == 1767225600.0
    assert parse_since(None, 100_000.0) == 100_000.0 - 86_400
    with pytest.raises(Exception, match="duration"):
        parse_since("yesterday", 0)


def test_codemode_portal_runs_the_bundled_config(tmp_path: Path) -> None:
    """What `make run` does: the bundled portal.toml, a banner with the servers, their scopes and the
    first-start admin password, then /healthz and sign-in with that password. Here the banner goes to
    a log file, so the password goes to a 0600 file beside the database instead of into the log."""
    import re
    import signal

    import httpx
    from upstreams import free_port

    root = Path(__file__).resolve().parents[1]
    port = free_port()
    db = f"sqlite:///{tmp_path / 'portal.db'}"
    log = tmp_path / "portal.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CODEMODE, "portal", "--config", str(root / "portal.toml"), "--port", str(port),
                                 "--database-url", db], stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2, trust_env=False)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        assert set(health.json()["servers"]) == {"petstore", "httpbin"}
        banner = log.read_text()
        assert f"issuer http://127.0.0.1:{port}" in banner
        assert f"http://127.0.0.1:{port}/mcp/petstore" in banner and "petstore:read petstore:write" in banner
        shown = re.search(r"created user 'admin'; its password is in (\S+)", banner)
        assert shown is not None and Path(shown.group(1)) == tmp_path / "initial-admin-password", banner
        secret = Path(shown.group(1))
        assert secret.stat().st_mode & 0o777 == 0o600
        password = re.fullmatch(r"(\S+)\n", secret.read_text())
        assert password is not None and password.group(1) not in banner
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
            page = http.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            ok = http.post("/login", data={"username": "admin", "password": password.group(1),
                                           "csrf": csrf.group(1), "next": "/account"})
            assert ok.status_code == 303
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    second = subprocess.run([CODEMODE, "portal", "user", "list", "--config", str(root / "portal.toml"),
                             "--database-url", db], capture_output=True, text=True, timeout=60)
    assert second.stdout.startswith("admin\tadmin\t")
    changed = subprocess.run([CODEMODE, "portal", "user", "passwd", "admin", "--password-stdin", "--config",
                              str(root / "portal.toml"), "--database-url", db], input="a-new-admin-password\n",
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert not secret.exists()  # the first-start password is stale now: its file goes


def test_a_busy_port_is_one_line_before_any_start_up_work(tmp_path: Path) -> None:
    """Another program holds the port: `codemode portal` says so in one line and exits non-zero at
    once, before it opens the database, creates the admin user or starts any hosted server (whose
    native threads used to abort the process: "terminate called without an active exception")."""
    import socket

    root = Path(__file__).resolve().parents[1]
    data = tmp_path / "data"
    config = tmp_path / "portal.toml"
    bundled = (root / "portal.toml").read_text().replace('data_dir = ".codemode-portal"', f'data_dir = "{data}"')
    config.write_text(bundled.replace('"servers/', f'"{root}/servers/').replace('"specs/', f'"{root}/specs/'))
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        started = time.monotonic()
        out = run("--config", str(config), "--port", str(port), cwd=tmp_path)
        took = time.monotonic() - started
    assert out.returncode == 2, out.stderr
    assert out.stderr == (f"error [config.port_unavailable]: port {port} on 127.0.0.1 is in use; "
                          "pick another with --port\n"), out.stderr  # fmt: skip
    assert out.stdout == "" and "terminate called" not in out.stderr
    assert not data.exists(), "the database was created before the port was checked"
    assert took < 60, took  # a hang bound, not a timing target
