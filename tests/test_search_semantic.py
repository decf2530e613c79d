"""The optional embedding ranker: fused with BM25 when installed, absent without error."""

from __future__ import annotations

from pathlib import Path

import pytest

from codemode import load_spec
from codemode._embed import default_embedder
from codemode._search import SearchIndex

SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "petstore3-openapi.yaml"
needs_spec = pytest.mark.skipif(not SPEC.exists(), reason=f"{SPEC} not present")
needs_model = pytest.mark.skipif(
    default_embedder() is None,
    reason="optional embedding model not installed: run scripts/setup.sh (CODEMODE_SEMANTIC=1, the default)",
)


@needs_spec
def test_bm25_only_without_embedder(tmp_path: Path) -> None:
    index = SearchIndex(load_spec(str(SPEC)), embedder=None, cache_dir=tmp_path)
    assert index.load_embeddings() is False
    assert not index.semantic
    assert index.search("find pets by status")


@needs_model
def test_encode_is_normalised() -> None:
    import numpy as np

    emb = default_embedder()
    assert emb is not None
    v = emb.encode(["delete a pet", "remove an animal", "upload a file"])
    assert v.shape[0] == 3 and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])


@needs_spec
@needs_model
def test_hybrid_search_and_cache(tmp_path: Path) -> None:
    spec = load_spec(str(SPEC))
    index = SearchIndex(spec, cache_dir=tmp_path)
    assert index.load_embeddings() is True and index.semantic
    assert list((tmp_path / "embed").glob("*.npy")), "operation embeddings are cached on disk"
    hits = index.search("get rid of this animal, it is gone", limit=5)
    assert any(h.operation.label == "DELETE /pet/{petId}" for h in hits)
    # a paraphrase with no word BM25 knows still gets semantic results
    assert index.search("Rex got adopted, mark him as sold", limit=5)
    # filters still apply to fused results
    assert all(h.operation.method == "get" for h in index.search("pets", method="get"))
    again = SearchIndex(spec, cache_dir=tmp_path)
    assert again.load_embeddings() is True  # read from the cache
