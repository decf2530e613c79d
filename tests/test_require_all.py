"""Under ``make test`` (CODEMODE_REQUIRE_ALL=1) a skipped test fails; outside it, it skips with its reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A test that skips when the PostgreSQL binaries are missing (pointed at a folder that has none).
TARGET = "tests/test_postgres_infra.py::test_cluster_is_stopped_and_removed_even_when_the_test_fails"


def _pytest(tmp_path: Path, require_all: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CODEMODE_REQUIRE_ALL"}
    env["CODEMODE_PG_BIN"] = str(tmp_path)
    if require_all:
        env["CODEMODE_REQUIRE_ALL"] = "1"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", TARGET]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_skip_is_reported_with_its_reason_outside_make_test(tmp_path: Path) -> None:
    done = _pytest(tmp_path, require_all=False)
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout
    assert "run scripts/setup-postgres.sh" in done.stdout


def test_a_skip_fails_under_make_test(tmp_path: Path) -> None:
    done = _pytest(tmp_path, require_all=True)
    assert done.returncode == 1, done.stdout
    assert "1 failed" in done.stdout
    assert "allows no skip" in done.stdout and "run scripts/setup-postgres.sh" in done.stdout
