"""Smoke test of bench/bench_portal.py: both measurements run and report sane numbers (no timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
bench_portal = pytest.importorskip("bench_portal")


def test_token_check_figures() -> None:
    r = bench_portal.token_check(None, 40)
    assert 0 < r["lookup_p50"] <= r["p50"] and r["p50"] <= r["p99"]


def test_search_through_a_running_portal() -> None:
    r = bench_portal.search_through_portal(1.0, clients=2)
    assert r["clients"] == 2 and r["calls"] > 0 and r["errors"] == 0
    assert 0 < r["p50"] <= r["p99"]
    sqlite = bench_portal.token_check(None, 20)
    table = bench_portal.table({"n": 20, "load_before": 0.0, "load_after": 0.0, "sqlite": sqlite,
                                "postgresql": "n/a (test)", "search": r})  # fmt: skip
    assert "20 concurrent" not in table and "2 concurrent authenticated clients" in table
