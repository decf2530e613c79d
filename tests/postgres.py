"""Throwaway PostgreSQL 15 clusters on loopback for tests.

``postgres_cluster()`` runs ``initdb`` into a fresh temporary folder, starts the server with
``pg_ctl`` on a free 127.0.0.1 port (its Unix socket in the same folder), waits until it accepts
connections, and yields a :class:`PostgresCluster` whose ``url`` is a SQLAlchemy URL for the
``postgres`` superuser (trust authentication, loopback only). On exit, also when the test failed,
the server is stopped (``pg_ctl stop -m fast``, then ``immediate``) and the folder removed.

As root, the binaries run as the ``postgres`` user (``runuser -u postgres --``) after a ``chown``;
as any other user they run directly. The binaries come from ``/usr/lib/postgresql/15/bin``
(``CODEMODE_PG_BIN`` points elsewhere); ``scripts/setup-postgres.sh`` installs them and psycopg.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from upstreams import free_port

__all__ = ["SKIP_REASON", "PostgresCluster", "pg_bin", "postgres_cluster"]

DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")
SKIP_REASON = "PostgreSQL 15 server binaries not found in {bin}: run scripts/setup-postgres.sh"
START_TIMEOUT_SECONDS = 60
COMMAND_TIMEOUT_SECONDS = 120
PORT_ATTEMPTS = 3
SERVER_USER = "postgres"  # the OS user the server runs as when the tests run as root
# Throwaway data: durability is not needed, and fsync would only slow the tests down.
SERVER_SETTINGS = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")


@dataclass(frozen=True)
class PostgresCluster:
    """A running cluster: ``url`` for SQLAlchemy, ``dsn`` for psycopg, and where it lives."""

    host: str
    port: int
    user: str
    dbname: str
    directory: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{self.dbname}"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def url_for(self, dbname: str) -> str:
        """The SQLAlchemy URL of another database in the same cluster."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    @contextlib.contextmanager
    def database(self, prefix: str = "test") -> Iterator[str]:
        """A new, empty database named ``<prefix>_<random>``: yields its SQLAlchemy URL, drops it after."""
        import psycopg
        from psycopg import sql

        dbname = f"{prefix}_{secrets.token_hex(6)}"
        name = sql.Identifier(dbname)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
        try:
            yield self.url_for(dbname)
        finally:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def pg_bin() -> Path:
    """Folder of ``initdb`` and ``pg_ctl``; skips the test when they are missing."""
    folder = Path(os.environ.get("CODEMODE_PG_BIN") or DEFAULT_PG_BIN)
    if not all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
        pytest.skip(SKIP_REASON.format(bin=folder))
    return folder


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_USER, "--", *argv]
    return argv


def _run(argv: list[str], what: str) -> None:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    done = subprocess.run(
        _as_server_user(argv),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed with code {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Start a fresh cluster on a free loopback port; stop it and delete its files afterwards."""
    binaries = pg_bin()
    pg_ctl = str(binaries / "pg_ctl")
    top = Path(tempfile.mkdtemp(prefix="codemode-pg-"))
    data, log = top / "data", top / "server.log"
    try:
        if os.geteuid() == 0:
            shutil.chown(top, user=SERVER_USER, group=None)
        _run([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
              "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], "initdb")  # fmt: skip
        port = _start(pg_ctl, data, top, log)
        try:
            yield PostgresCluster("127.0.0.1", port, "postgres", "postgres", top)
        finally:
            _stop(pg_ctl, data)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _start(pg_ctl: str, data: Path, socket_dir: Path, log: Path) -> int:
    """``pg_ctl start -w`` (waits until connections are accepted); retries if the port was taken."""
    failure = ""
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        options = " ".join((f"-k {socket_dir} -h 127.0.0.1 -p {port}", *SERVER_SETTINGS))
        log.unlink(missing_ok=True)  # so the log read on failure is this attempt's
        try:
            _run([pg_ctl, "-D", str(data), "-o", options, "-l", str(log),
                  "-w", "-t", str(START_TIMEOUT_SECONDS), "start"], "pg_ctl start")  # fmt: skip
            return port
        except RuntimeError as exc:
            failure = f"{exc}\nserver log:\n{_log_tail(log)}"
            if "Address already in use" not in failure:
                break
    raise RuntimeError(failure)


def _stop(pg_ctl: str, data: Path) -> None:
    if not (data / "postmaster.pid").exists():
        return
    for mode in ("fast", "immediate"):
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run([pg_ctl, "-D", str(data), "-m", mode, "-w", "-t", "30", "stop"], f"pg_ctl stop -m {mode}")
            return
