"""Search answers and the hybrid ranker's mechanics, fast: a fake embedder, real specs.

What the model reads: hits with their siblings on the same path, a table of contents,
filter listings, and a clear answer for every odd input (empty, only stopwords, 10 kB,
unicode, control characters, an unknown tag or method), all within the token budget.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from codemode import load_spec
from codemode._answer import answer_search, approx_tokens
from codemode._embed import EMBED_STEP, op_text, operation_matrix
from codemode._ir import ApiSpec
from codemode._optext import body_text, values_text
from codemode._progress import ProgressEvent, Step
from codemode._search import SearchIndex

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "specs"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/specs is not beside the checkout")
BUDGET = 2500

# The fake's "meaning": words that mean the same thing share a concept.
CONCEPTS = {"animal": "pet", "pets": "pet", "remove": "delete", "erase": "delete", "sold": "status"}


class FakeEmbedder:
    """Bag-of-concepts vectors: texts sharing (concept) words are similar. Deterministic, instant."""

    model_id = "fake-bag-of-concepts"
    no_match_cosine = 0.3
    dims = 256

    def __init__(self) -> None:
        self.documents = 0
        self.queries = 0

    def _vec(self, text: str) -> np.ndarray[Any, Any]:
        v = np.zeros(self.dims, dtype=np.float32)
        for w in re.findall(r"[a-z]+", text.lower()):
            w = CONCEPTS.get(w, w)
            v[int(hashlib.sha256(w.encode()).hexdigest(), 16) % self.dims] += 1.0
        n = float(np.linalg.norm(v))
        return v / n if n else v

    def embed_documents(self, texts: Sequence[str], progress: Step | None = None) -> np.ndarray[Any, Any]:
        self.documents += len(texts)
        out = np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dims), np.float32)
        if progress is not None:
            progress.advance(len(texts))
        return out.astype(np.float32)

    def embed_query(self, text: str) -> np.ndarray[Any, Any]:
        self.queries += 1
        return self._vec(text)


class Events:
    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def emit(self, event: ProgressEvent) -> None:
        self.events.append(event)


@pytest.fixture(scope="module")
def petstore() -> ApiSpec:
    return load_spec(str(ROOT / "specs" / "petstore3-openapi.yaml"))


@pytest.fixture(scope="module")
def github() -> ApiSpec:
    return load_spec(str(SHARED / "github-api.github.com.json"))


@pytest.fixture
def hybrid(petstore: ApiSpec, tmp_path: Path) -> SearchIndex:
    index = SearchIndex(petstore, embedder=FakeEmbedder(), cache_dir=tmp_path)
    assert index.load_embeddings()
    return index


# -- the semantic ranker's life cycle ----------------------------------------------------------------


def test_state_progress_and_cache(petstore: ApiSpec, tmp_path: Path) -> None:
    fake, events = FakeEmbedder(), Events()
    index = SearchIndex(petstore, embedder=fake, cache_dir=tmp_path, progress=events)
    assert index.semantic_state == "building" and not index.semantic
    assert index.load_embeddings() and index.semantic_state == "ready"
    keyword = [e for e in events.events if e.step.startswith("indexing Swagger Petstore")]
    assert keyword[0].kind == "start" and keyword[-1].kind == "done" and keyword[-1].done == 19
    steps = [e for e in events.events if e.kind != "tick" and e.step.startswith(EMBED_STEP)]
    assert steps[0].kind == "start" and steps[0].total == 19
    assert steps[-1].kind == "done" and steps[-1].done == 19
    assert fake.documents == 19 and list((tmp_path / "embed").glob("*.npy"))
    again, quiet = FakeEmbedder(), Events()
    second = SearchIndex(petstore, embedder=again, cache_dir=tmp_path, progress=quiet)
    assert second.load_embeddings() and again.documents == 0  # from the cache
    assert not [e for e in quiet.events if e.step.startswith(EMBED_STEP)]  # silently


def test_off_and_failed_states(petstore: ApiSpec, tmp_path: Path) -> None:
    off = SearchIndex(petstore, embedder=None)
    assert off.semantic_state == "off" and not off.load_embeddings()

    class Broken(FakeEmbedder):
        def embed_documents(self, texts: Sequence[str], progress: Step | None = None) -> np.ndarray[Any, Any]:
            raise RuntimeError("model exploded")

    broken = SearchIndex(petstore, embedder=Broken(), cache_dir=tmp_path)
    assert not broken.load_embeddings() and broken.semantic_state == "failed"
    assert broken.search("delete a pet")[0].operation.label == "DELETE /pet/{petId}"  # BM25 still answers


def test_a_stale_cache_entry_is_rebuilt(petstore: ApiSpec, tmp_path: Path) -> None:
    fake = FakeEmbedder()
    operation_matrix(petstore, fake, tmp_path)
    (entry,) = (tmp_path / "embed").glob("*.npy")
    np.save(entry, np.zeros((3, 4), dtype=np.float32))  # wrong shape: another spec's, or damaged
    matrix = operation_matrix(petstore, fake, tmp_path)
    assert matrix.shape == (19, fake.dims) and fake.documents == 38


def test_load_embeddings_is_idempotent_across_threads(petstore: ApiSpec, tmp_path: Path) -> None:
    fake = FakeEmbedder()
    index = SearchIndex(petstore, embedder=fake, cache_dir=tmp_path)
    threads = [threading.Thread(target=index.load_embeddings) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert index.semantic and fake.documents == 19  # built once


# -- ranking ---------------------------------------------------------------------------------------


def test_hybrid_finds_by_meaning_and_keeps_filters(hybrid: SearchIndex) -> None:
    assert hybrid.search("erase this animal")[0].operation.label == "DELETE /pet/{petId}"
    assert all(h.operation.method == "get" for h in hybrid.search("pets", method="get"))
    assert all(h.operation.path.startswith("/store") for h in hybrid.search("order", path_prefix="/store"))


@pytest.mark.parametrize("query", ["xyzzyplugh", "🚀🚀🚀", "\x00\x01\x02", "the of and", "", "   ", "!!!???"])
def test_nothing_matches_nonsense_with_either_ranker(petstore: ApiSpec, hybrid: SearchIndex, query: str) -> None:
    assert SearchIndex(petstore, embedder=None).search(query) == []
    assert hybrid.search(query) == []


def test_a_word_of_the_api_is_never_thrown_away(hybrid: SearchIndex) -> None:
    assert hybrid.search("inventory")  # BM25 knows the word even if the cosine is low


def test_request_body_properties_and_enum_values_are_indexed(petstore: ApiSpec) -> None:
    add = petstore.operation("pet.add")
    assert add is not None
    assert "photoUrls" in body_text(petstore, add) or "photoUrls" in {p.name for p in add.params}
    by_status = petstore.operation("pet.find_pets_by_status")
    assert by_status is not None and "available" in values_text(petstore, by_status)


@needs_shared
def test_body_words_reach_the_operation_that_takes_them(github: ApiSpec) -> None:
    patch = next(op for op in github.operations if op.label == "PATCH /repos/{owner}/{repo}")
    assert "private" in body_text(github, patch).lower()
    cloudflare = load_spec(str(SHARED / "cloudflare-openapi.json"))
    create = next(op for op in cloudflare.operations if op.label == "POST /zones/{zone_id}/dns_records")
    assert "TXT" in values_text(cloudflare, create).split()


@needs_shared
def test_operation_text_for_the_embedder(github: ApiSpec) -> None:
    op = next(op for op in github.operations if op.label == "GET /repos/{owner}/{repo}/pulls")
    text = op_text(op, github)
    assert text.startswith("List pull requests. GET repos pulls")
    assert "pulls: Interact with GitHub Pull Requests." in text  # the tag, with its description's first sentence
    assert "state" in text and "per page" in text  # parameter names
    assert len(text) < 1200


# -- answers -----------------------------------------------------------------------------------------


def test_siblings_on_the_same_path_are_one_line_away(hybrid: SearchIndex) -> None:
    answer = answer_search(hybrid, "find a pet by its id", limit=1)
    assert answer.hits[0].label == "GET /pet/{petId}"
    assert "also on this path: POST api.pet.update_with_form, DELETE api.pet.delete" in answer.text
    assert {o.label for o in answer.shown} >= {"GET /pet/{petId}", "POST /pet/{petId}", "DELETE /pet/{petId}"}


def test_table_of_contents(petstore: ApiSpec) -> None:
    text = answer_search(SearchIndex(petstore, embedder=None)).text
    assert text.startswith("Swagger Petstore - OpenAPI 3.0: 19 operations in 3 tags.")
    assert "pet (8): Everything about your Pets" in text and "store (4):" in text and "user (7):" in text


def test_every_group_of_the_table_of_contents_can_be_listed() -> None:
    """The table of contents says search(tag='<name>') lists a group: every name it shows must work, with
    the count it shows. OpenAI's 31 operations without a tag were listed as '(untagged)', which tag= refused."""
    import json

    files = [entry["file"] for entry in json.loads((SHARED / "index.json").read_text())]
    for file in files:
        index = SearchIndex(load_spec(str(SHARED / file)), embedder=None)
        for group in index.groups():
            answer = answer_search(index, tag=group.name)
            assert not answer.is_error, (file, group.name, answer.text)
            listed = {h.operation.key for h in index.search("", tag=group.name, limit=10**9)}
            assert {op.key for op in group.operations} <= listed, (file, group.name)  # a group counts first tags


def test_tag_alone_lists_its_operations(petstore: ApiSpec) -> None:
    answer = answer_search(SearchIndex(petstore, embedder=None), tag="store")
    assert answer.text.startswith("4 operations with tag='store':")
    assert "POST /store/order  api.store.place_order  # Place an order for a pet." in answer.text
    assert len(answer.hits) == 4 and not answer.is_error


@pytest.mark.parametrize(
    ("kwargs", "expect"),
    [
        ({"tag": "Pets!"}, "has no tag 'Pets!'. Did you mean: pet?"),
        ({"tag": "nope", "query": "delete"}, "has no tag 'nope'."),
        ({"method": "FETCH"}, "method='fetch' is not an HTTP method"),
        ({"query": "the of and"}, "(it has no word to search for: only common words"),
        ({"query": "ééééé 🚀"}, "(it has no word to search for"),
        ({"tag": "x" * 10_000}, "has no tag 'xxxxxxxx"),
        ({"path_prefix": "/" + "a" * 10_000}, "has path_prefix='/aaaa"),
        ({"query": "xyzzyplugh"}, "(none of its words occurs in this API)"),
        ({"query": "pett"}, "Try: pet"),
        ({"path_prefix": "/nowhere"}, "No operation of Swagger Petstore - OpenAPI 3.0 has path_prefix='/nowhere'."),
        ({"query": "delete", "path_prefix": "/store/inventory"}, "'delete' with path_prefix='/store/inventory'."),
        ({"method": "x" * 10_000}, "is not an HTTP method"),
    ],
)
def test_odd_inputs_get_a_clear_answer(petstore: ApiSpec, kwargs: dict[str, Any], expect: str) -> None:
    answer = answer_search(SearchIndex(petstore, embedder=None), **kwargs)
    assert expect in answer.text, answer.text
    assert not answer.hits and len(answer.text) < 1000  # a huge input is never echoed back whole


def test_no_match_with_the_semantic_ranker_names_the_nearest(hybrid: SearchIndex) -> None:
    text = answer_search(hybrid, "xyzzyplugh").text
    assert text.startswith("No operation of Swagger Petstore - OpenAPI 3.0 matches 'xyzzyplugh'")


@needs_shared
@pytest.mark.parametrize(
    "query",
    [
        "x" * 10_000,
        "delete " * 2000,
        "créer un dépôt privé 🚀",
        "list\x00pull\x1frequests",
        "ｌｉｓｔ ｐｕｌｌｓ",
        "a" * 31,
    ],
)
def test_hostile_queries_are_answered_within_budget(github: ApiSpec, query: str) -> None:
    index = SearchIndex(github, embedder=None)
    answer = answer_search(index, query, budget_tokens=BUDGET)
    assert answer.text and approx_tokens(answer.text) <= BUDGET
    assert len(answer.text) < 600 or "\n" in answer.text  # a no-match line echoes at most a short cut of the query


@needs_shared
def test_big_spec_answers_stay_in_budget(github: ApiSpec) -> None:
    index = SearchIndex(github, embedder=None)
    toc = answer_search(index, budget_tokens=BUDGET)
    assert approx_tokens(toc.text) <= BUDGET and "repos (" in toc.text and "pulls (" in toc.text
    listing = answer_search(index, tag="repos", budget_tokens=BUDGET)
    assert approx_tokens(listing.text) <= BUDGET and "more: add a query" in listing.text
    hits = answer_search(index, "make my repo private", limit=25, budget_tokens=BUDGET)
    assert approx_tokens(hits.text) <= BUDGET and hits.hits
    cloudflare = SearchIndex(load_spec(str(SHARED / "cloudflare-openapi.json")), embedder=None)
    toc = answer_search(cloudflare, budget_tokens=BUDGET)
    assert approx_tokens(toc.text) <= BUDGET and "more tags with" in toc.text


def test_keyword_note_while_the_semantic_ranker_is_being_prepared(petstore: ApiSpec) -> None:
    index = SearchIndex(petstore, embedder=FakeEmbedder())  # not loaded yet
    answer = answer_search(index, "delete a pet")
    assert answer.text.splitlines()[0] == "(keyword ranking: semantic search is still being prepared)"
    index.emit(ProgressEvent("x", "advance", done=5, total=10))
    assert "50% done" in answer_search(index, "delete a pet").text.splitlines()[0]
    index.load_embeddings()
    assert not answer_search(index, "delete a pet").text.startswith("(keyword")
    assert not answer_search(SearchIndex(petstore, embedder=None), "delete a pet").text.startswith("(")


def test_no_keyword_note_when_the_model_is_not_installed(petstore: ApiSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    import codemode._embed as embed

    monkeypatch.setattr(embed, "find_model", lambda *a, **k: None)
    index = SearchIndex(petstore)  # "auto", but there is no model to wait for
    assert index.semantic_state == "off"
    assert not answer_search(index, "delete a pet").text.startswith("(keyword")
    monkeypatch.setenv("CODEMODE_EMBEDDINGS", "off")
    assert SearchIndex(petstore).semantic_state == "off"


@pytest.mark.parametrize("query", ["xyzzyplugh 2", "\x1b[2J", "2", "1 2 3", "v 2"])
def test_numbers_and_single_letters_alone_match_nothing(tmp_path: Path, query: str) -> None:
    """A pasted escape code or a lone number is no evidence, even when the API's words contain it."""
    spec_file = tmp_path / "v2.json"
    spec_file.write_text(
        '{"openapi": "3.0.0", "info": {"title": "Two", "version": "2"}, "paths": {'
        '"/v2/items/{id}": {"get": {"operationId": "getItem2", "summary": "Get item 2 j", "parameters": '
        '[{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}], '
        '"responses": {"200": {"description": "ok"}}}}, "/clusters": {"put": {"operationId": "upgrade", '
        '"summary": "Upgrade a K8S cluster", "responses": {"200": {"description": "ok"}}}}}}'
    )
    index = SearchIndex(load_spec(str(spec_file), cache_dir=tmp_path / "cache"), embedder=None)
    assert index.search(query) == []
    assert index.search("get item 2")[0].operation.label == "GET /v2/items/{id}"  # a word with it: found
    assert index.search("k8s")[0].operation.label == "PUT /clusters"  # letters and digits: a word
