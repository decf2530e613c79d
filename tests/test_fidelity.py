"""The fidelity suite: what codemode sends is what each corpus spec says, checked by an independent implementation.

A sample of every corpus spec's operations goes through the real execute path (policy check, wasm
isolate, guest client, request builder, httpx) to a recorder on 127.0.0.1; each recorded request is
validated by openapi-core's request validator against the *original* spec document (OpenAPI 3.0/3.1)
or by ``bench.fidelity.check_swagger`` (Swagger 2.0), and each dry-run stand-in by openapi-core's
response validator. ``bench/fidelity.py`` runs every operation and prints the report in the README.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from codemode import load_spec
from codemode._render import signature

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import fidelity  # noqa: E402

SHARED = ROOT.parent / "shared" / "specs"
SAMPLE = int(os.environ.get("CODEMODE_FIDELITY_SAMPLE", "30"))  # operations per spec; bench/fidelity.py runs all
MIN_SHARE = 99.0
MIN_STAND_INS = 97.0
pytestmark = [
    pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/specs is not beside the checkout"),
    pytest.mark.filterwarnings("ignore:Unsupported scheme type:UserWarning"),  # openapi-core on mutualTLS/oauth2 specs
    pytest.mark.filterwarnings("ignore:.*is deprecated:DeprecationWarning"),  # openapi-core on deprecated parameters
]


@pytest.fixture(scope="module")
def reports() -> list[fidelity.SpecReport]:
    return asyncio.run(fidelity.run_all(sample=SAMPLE, wasm=True))


def test_every_corpus_spec_with_operations_was_checked(reports: list[fidelity.SpecReport]) -> None:
    expected = {entry["file"] for entry in json.loads((SHARED / "index.json").read_text()) if entry["ops"]}
    assert {r.name for r in reports} == expected
    for r in reports:
        assert r.outcomes, r.name
        if r.version.startswith(("3.0", "3.1")):
            assert r.validator == "openapi-core", r.name
        elif r.version.startswith("2"):
            assert r.validator == "swagger-check", r.name


def test_requests_validate_against_the_original_spec(reports: list[fidelity.SpecReport]) -> None:
    """≥ 99 % of the sampled operations of every spec, leaving out only constructs openapi-core cannot check."""
    low = {
        r.name: (r.share, fidelity.causes([r]))
        for r in reports
        if r.share is not None and r.share < MIN_SHARE and r.validator in ("openapi-core", "swagger-check")
    }
    assert not low, low
    limited = sum(r.limited for r in reports)
    checked = sum(len(r.outcomes) for r in reports)
    assert limited <= 0.05 * checked, fidelity.limits(reports)  # the escape hatch stays small


def test_swagger_requests_conform_to_their_own_parameter_definitions(reports: list[fidelity.SpecReport]) -> None:
    swagger = [r for r in reports if r.validator == "swagger-check"]
    assert len(swagger) >= 5
    for r in swagger:
        assert r.requests_ok == len(r.outcomes), (r.name, fidelity.causes([r]))


def test_dry_run_stand_ins_validate_against_their_response_schemas(reports: list[fidelity.SpecReport]) -> None:
    checked = sum(r.stand_ins - r.stand_ins_limited for r in reports)
    valid = sum(r.stand_ins_ok for r in reports)
    assert checked > 200
    assert 100 * valid / checked >= MIN_STAND_INS, fidelity.causes(reports, "stand_in")


def test_the_validators_refuse_requests_that_are_wrong() -> None:
    """The checks can fail: a JSON-encoded form field, a missing required parameter and a bad type are caught."""
    app = fidelity._openapi_core(ROOT / "tests" / "specs" / "pagerduty-like.yaml")
    headers = {
        "Accept": "application/vnd.pagerduty+json;version=2", "Content-Type": "application/json",
        "Authorization": "Token token=x",
    }  # fmt: skip
    host = "https://api.pagerduty.example.com"
    good = fidelity.Recorded("GET", "/incidents?statuses%5B%5D=triggered&total=true", headers, b"")
    app.validate_request(fidelity._mock_request(host, good))
    for bad in (
        fidelity.Recorded("GET", "/incidents?statuses%5B%5D=exploded", headers, b""),  # not one of the enum
        fidelity.Recorded("GET", "/incidents?limit=ten", headers, b""),  # not an integer
        fidelity.Recorded("GET", "/incidents", {"Authorization": "x"}, b""),  # required headers missing
    ):
        with pytest.raises(Exception, match=r"Invalid|Missing required|parameter error"):
            app.validate_request(fidelity._mock_request(host, bad))
    store = fidelity.DocumentStore.open(str(ROOT / "specs" / "kinto-26.5.0-served-__api__.json"))
    spec = load_spec(str(ROOT / "specs" / "kinto-26.5.0-served-__api__.json"))
    op = next(o for o in spec.operations if o.method == "get" and o.path == "/buckets/{bucket_id}/collections")
    ok = fidelity.Recorded("GET", "/v1/buckets/b/collections?_limit=5", {}, b"")
    assert fidelity.check_swagger(store, op, ok, "/v1") is None
    wrong = fidelity.Recorded("GET", "/v1/buckets/b/collections?_limit=five&_nope=1", {}, b"")
    assert "is not a integer" in (fidelity.check_swagger(store, op, wrong, "/v1") or "")


def _corpus_specs() -> list[Path]:
    if not SHARED.is_dir():
        return []
    return [SHARED / e["file"] for e in json.loads((SHARED / "index.json").read_text()) if e["ops"]]


@pytest.mark.parametrize("path", _corpus_specs(), ids=lambda p: p.name)
def test_every_rendered_signature_is_python(path: Path) -> None:
    """With `…N more optional` removed and shapes read as `dict`, each parameter list parses with ast.parse."""
    spec = load_spec(str(path))
    for op in spec.operations:
        for text in (signature(op, max_optional=None), signature(op)):
            inner = text[text.index("(") + 1 : text.rindex(") ->")]
            inner = re.sub(r",?\s*…\d+ more optional", "", inner)
            previous = None
            while previous != inner:
                previous, inner = inner, re.sub(r"\{[^{}]*\}", "dict", inner)
            try:
                ast.parse(f"def f({inner}): pass")
            except SyntaxError as exc:
                raise AssertionError(f"{op.key}: {text}") from exc
            code = re.sub(r"'[^']*'", "", inner + text.rsplit(") -> ", 1)[1])  # outside string literals
            assert not {"false", "true", "null"} & set(re.findall(r"\b\w+\b", code)), text


def test_a_stand_in_for_every_corpus_response_is_valid_json(tmp_path: Path) -> None:
    """Stand-ins are JSON data (the execute answer carries them) and never the old all-None objects."""
    spec = load_spec(str(SHARED / "github-api.github.com.json"))
    from codemode._standin import stand_in

    op: Any = spec.operation("repos.get")
    assert op is not None
    resp = op.success_response()
    value = stand_in(spec, resp.schema)
    json.dumps(value)
    assert value["default_branch"] and value["owner"]["login"] and value["full_name"]
