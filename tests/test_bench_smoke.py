"""Smoke test of bench/bench_spec.py on two small specs: it runs and its numbers are sane (no timings)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
bench_spec = pytest.importorskip("bench_spec")

SMALL = ["petstore3-openapi.yaml", "oai-v2.0-petstore-separate/spec/swagger.json"]

pytestmark = pytest.mark.skipif(not bench_spec.SPECS.exists(), reason="shared spec corpus not present")


@pytest.mark.parametrize("name", SMALL)
def test_footprint_row(name: str) -> None:
    count, method = bench_spec.token_counter()
    assert method
    row = bench_spec.footprint_row(name, count)
    assert row["ops"] > 0
    assert 0 < row["ours_tokens"] < row["ours_chars"]
    assert row["naive_tokens"] > 0
    if name.startswith("petstore3"):
        assert row["ours_tokens"] < row["naive_tokens"]


def test_ours_tools_list_has_exactly_two_tools() -> None:
    import json

    from codemode import load_spec

    spec = load_spec(bench_spec.spec_path(SMALL[0]))
    tools = json.loads(bench_spec.ours_tools_list(spec))["tools"]
    assert [t["name"] for t in tools] == ["search", "execute"]


def test_naive_inlines_refs_and_cuts_cycles() -> None:
    import json

    from codemode import load_spec

    spec = load_spec(bench_spec.spec_path(SMALL[0]))
    text, _inliner = bench_spec.naive_tools_list(spec)
    tools = json.loads(text)["tools"]
    assert len(tools) == len(spec.operations)
    assert "#/components/schemas/" not in text  # every ref inlined
    assert all(t["inputSchema"]["type"] == "object" for t in tools)
    # a self-referencing schema is cut, not expanded forever
    spec.schemas["Loop"] = {"type": "object", "properties": {"next": {"$ref": "#/components/schemas/Loop"}}}
    out = bench_spec.Inliner(spec).inline({"$ref": "#/components/schemas/Loop"})
    assert out["properties"]["next"]["type"] == "object"


def test_search_latency_and_render() -> None:
    row = bench_spec.search_latency(SMALL[0], n_queries=20)
    assert row["queries"] == 20 and row["ops"] == 19
    assert 0 <= row["p50"] <= row["p90"] <= row["p99"]
    assert not row["tool_failures"]
    text = bench_spec.render({"token_method": "x", "runs": 1, "search": [row], "errors": {}})
    assert "| petstore3-openapi.yaml |" in text


def test_cold_start_once_answers_initialize() -> None:
    seconds = bench_spec.cold_start_once(bench_spec.spec_path(SMALL[0]), cache=False)
    assert seconds > 0


def test_every_bench_module_imports() -> None:
    import importlib
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench))
    try:
        for name in ("bench_execute", "bench_sandbox", "bench_spec", "search_eval", "run", "fidelity"):
            assert importlib.import_module(name) is not None
    finally:
        sys.path.remove(str(bench))


@pytest.mark.parametrize("queries", ["search_queries.yaml", "search_heldout.yaml"])
def test_every_search_label_names_an_operation(queries: str) -> None:
    search_eval = importlib.import_module("search_eval")
    assert search_eval.check_labels(BENCH / queries) == []


def test_check_labels_reports_an_unknown_label(tmp_path: Path) -> None:
    search_eval = importlib.import_module("search_eval")
    bad = tmp_path / "q.yaml"
    bad.write_text(
        "specs:\n  petstore:\n    file: petstore3-openapi.yaml\n    queries:\n"
        '      - q: "add a dog"\n        expect: ["POST /pet", "POST /dogs"]\n'
        '      - q: "nothing"\n        expect: []\n'
    )
    problems = search_eval.check_labels(bad)
    assert len(problems) == 2
    assert "'POST /dogs' is not an operation" in problems[0] and "no expect labels" in problems[1]


def test_heldout_set_shape() -> None:
    """Issue 9: >= 120 phrasings over >= 10 specs, >= 4 of them unused by the tuning set."""
    import yaml

    held = yaml.safe_load((BENCH / "search_heldout.yaml").read_text())["specs"]
    tuning = yaml.safe_load((BENCH / "search_queries.yaml").read_text())["specs"]
    assert sum(len(e["queries"]) for e in held.values()) >= 120
    assert len(held) >= 10
    assert len({e["file"] for e in held.values()} - {e["file"] for e in tuning.values()}) >= 4
    tuning_phrasings = {q["q"].lower() for e in tuning.values() for q in e["queries"]}
    assert not tuning_phrasings & {q["q"].lower() for e in held.values() for q in e["queries"]}
