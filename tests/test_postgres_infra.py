"""Self-test of the throwaway PostgreSQL clusters (tests/postgres.py) and their fixtures."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from postgres import PostgresCluster, pg_bin, postgres_cluster

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 not installed: run scripts/setup-postgres.sh")


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """Connect with a SQLAlchemy-style URL, the way the portal's storage will be given it."""
    parts = urlsplit(url)
    assert parts.scheme == "postgresql+psycopg"
    assert parts.hostname == "127.0.0.1"
    return psycopg.connect(
        host=parts.hostname, port=parts.port, user=parts.username, dbname=parts.path.lstrip("/"), connect_timeout=10
    )


def test_session_cluster_is_postgres_15_on_loopback(postgres_url: str) -> None:
    with _connect(postgres_url) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        listen = conn.execute("SHOW listen_addresses").fetchone()
        user = conn.execute("SELECT current_user").fetchone()
    assert version is not None and int(str(version[0])) // 10000 == 15
    assert listen == ("127.0.0.1",)
    assert user == ("postgres",)


def test_cluster_stores_and_reads_back(postgres_db_url: str) -> None:
    with _connect(postgres_db_url) as conn:
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO notes (body) VALUES (%s), (%s)", ("first", "zweite ü"))
        conn.commit()
    with _connect(postgres_db_url) as conn:
        rows = conn.execute("SELECT body FROM notes ORDER BY id").fetchall()
    assert rows == [("first",), ("zweite ü",)]


def test_each_test_database_is_separate(postgres: PostgresCluster, postgres_db_url: str) -> None:
    with _connect(postgres_db_url) as conn:
        conn.execute("CREATE TABLE only_here (x int)")
        conn.commit()
    with _connect(postgres.url) as conn:
        found = conn.execute("SELECT to_regclass('only_here')").fetchone()
    assert found == (None,)
    assert postgres_db_url != postgres.url


def test_cluster_is_stopped_and_removed_even_when_the_test_fails() -> None:
    seen: list[PostgresCluster] = []
    with pytest.raises(ZeroDivisionError), postgres_cluster() as cluster:
        seen.append(cluster)
        with _connect(cluster.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        _ = 1 / 0
    (cluster,) = seen
    assert not cluster.directory.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.dsn, connect_timeout=3).close()


def test_missing_binaries_skip_naming_the_setup_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEMODE_PG_BIN", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match=r"scripts/setup-postgres\.sh"):
        pg_bin()
