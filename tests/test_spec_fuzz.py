"""A 200-case sample of the spec-loader fuzz (``bench/spec_fuzz.py`` runs 1,000): every mutated corpus spec
loads or fails with a one-line ``spec.*`` error within 10 s, with no traceback, no crash and no hang."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import spec_fuzz

SAMPLE = 200


def test_mutated_specs_load_or_fail_cleanly() -> None:
    if len(spec_fuzz.corpus()) < len(spec_fuzz.CORPUS):
        pytest.skip("the shared spec corpus (../shared/specs) is not present")
    results = spec_fuzz.run(list(range(SAMPLE)))
    assert len(results) == SAMPLE
    bad = [r for r in results if r.outcome not in ("loaded", "spec error")]
    assert not bad, spec_fuzz.table(results)
    outcomes = {r.outcome for r in results}
    assert outcomes == {"loaded", "spec error"}  # the sample exercises both ends


def test_the_mutator_is_deterministic_and_varied() -> None:
    sources = spec_fuzz.corpus()
    originals = spec_fuzz._load_originals(sources)
    first = [spec_fuzz.case(seed, sources, originals) for seed in range(40)]
    again = [spec_fuzz.case(seed, sources, originals) for seed in range(40)]
    assert first == again
    kinds = {name for _, _, names in first for name in names}
    assert {"drop", "type", "huge", "deep", "utf8", "cut"} <= kinds, kinds
