"""Queries that name an operation outright (codemode._references): names, METHOD /path, URLs, tracebacks."""

from __future__ import annotations

import json
import random
import string
import time
from pathlib import Path

import pytest
import yaml

from codemode import load_spec
from codemode._answer import answer_detail, answer_search
from codemode._ir import ApiSpec
from codemode._references import MAX_REFERENCES, References
from codemode._search import SearchIndex

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "specs"
HANG_BOUND_S = 10.0  # bounds a hang on a huge paste; not a speed target (those live in bench/)


@pytest.fixture(scope="module")
def github() -> SearchIndex:
    return SearchIndex(load_spec(str(SHARED / "github-api.github.com.json")), embedder=None)


@pytest.fixture(scope="module")
def cloudflare() -> SearchIndex:
    return SearchIndex(load_spec(str(SHARED / "cloudflare-openapi.json")), embedder=None)


@pytest.fixture(scope="module")
def twilio() -> SearchIndex:
    return SearchIndex(load_spec(str(SHARED / "twilio_api_v2010.json")), embedder=None)


def _top(index: SearchIndex, query: str, **filters: str) -> str:
    hits = index.search(query, **filters)  # type: ignore[arg-type]
    assert hits, query
    return hits[0].operation.label


@pytest.mark.parametrize(
    ("query", "label"),
    [
        ("api.repos.update", "PATCH /repos/{owner}/{repo}"),
        ("how do I call api.pulls.get with a number?", "GET /repos/{owner}/{repo}/pulls/{pull_number}"),
        ("repos/delete", "DELETE /repos/{owner}/{repo}"),  # an operationId
        ("PATCH /repos/{owner}/{repo}", "PATCH /repos/{owner}/{repo}"),
        ("what does delete /repos/{owner}/{repo} need", "DELETE /repos/{owner}/{repo}"),  # any case
        ("PATCH /repos/octo/hello", "PATCH /repos/{owner}/{repo}"),  # a concrete path: its template
        ("GET https://api.github.com/repos/octo/hello/pulls/42?per_page=5",
         "GET /repos/{owner}/{repo}/pulls/{pull_number}"),
    ],
)  # fmt: skip
def test_a_named_operation_comes_first(github: SearchIndex, query: str, label: str) -> None:
    assert _top(github, query) == label


def test_a_concrete_url_prefers_the_most_literal_template(github: SearchIndex) -> None:
    # /repos/{owner}/{repo}/pulls/{pull_number} and /repos/{owner}/{repo}/pulls/comments both have 4
    # segments; "comments" is literal in the second, so it is the one the URL names.
    found = github.references("https://api.github.com/repos/octo/hello/pulls/comments")
    assert found[0].path == "/repos/{owner}/{repo}/pulls/comments"
    assert {op.path for op in github.references("/repos/octo/hello/pulls/42")} == {
        "/repos/{owner}/{repo}/pulls/{pull_number}"
    }


def test_a_url_with_the_servers_base_path(cloudflare: SearchIndex) -> None:
    """Cloudflare's server is https://api.cloudflare.com/client/v4: a pasted URL carries /client/v4."""
    query = (
        "curl -X DELETE https://api.cloudflare.com/client/v4/zones/023e105f4ecef8ad9ca31a8372d0c353"
        "/dns_records/372e67954025e0ba6aaa6d586b9e0b59 -H 'Authorization: Bearer x'"
    )
    assert _top(cloudflare, query) == "DELETE /zones/{zone_id}/dns_records/{dns_record_id}"


def test_a_pasted_traceback_names_its_operations(github: SearchIndex) -> None:
    traceback = """Traceback (most recent call last):
  File "/app/sync.py", line 41, in <module>
    r.raise_for_status()
  File "/usr/lib/python3/site-packages/httpx/_models.py", line 829, in raise_for_status
    raise HTTPStatusError(message, request=request, response=self)
httpx.HTTPStatusError: Client error '404 Not Found' for url 'https://api.github.com/repos/octo/hello/issues/7/comments'
"""
    assert _top(github, traceback) == "GET /repos/{owner}/{repo}/issues/{issue_number}/comments"
    answer = answer_search(github, traceback)  # the path's other method is one line away
    assert "POST /repos/{owner}/{repo}/issues/{issue_number}/comments" in {op.label for op in answer.shown}


@pytest.mark.parametrize(
    ("query", "task"),
    [
        ("add a collaborator to /repos/octo/hello", "PUT /repos/{owner}/{repo}/collaborators/{username}"),
        ("what does GET /repos/octo/hello/issues return, and how do I create an issue",
         "GET /repos/{owner}/{repo}/issues"),
    ],
)  # fmt: skip
def test_a_path_in_a_sentence_does_not_push_the_task_out(github: SearchIndex, query: str, task: str) -> None:
    """A path in a sentence is what the task is about, often the parent of what to call: only its GET
    goes first (the DELETE and PATCH of the repository used to take the next two places)."""
    labels = [h.operation.label for h in github.search(query)[:2]]
    assert task in labels, labels
    assert not any(label.startswith(("DELETE", "PATCH")) for label in labels), labels


def test_a_url_in_a_sentence_on_cloudflare(cloudflare: SearchIndex) -> None:
    query = "add a TXT record to https://api.cloudflare.com/client/v4/zones/023e105f4ecef8ad9ca31a8372d0c353"
    assert [op.label for op in cloudflare.references(query)] == ["GET /zones/{zone_id}"]
    labels = [h.operation.label for h in cloudflare.search(query)[:3]]
    assert "POST /zones/{zone_id}/dns_records" in labels, labels
    alone = cloudflare.references("https://api.cloudflare.com/client/v4/zones/023e105f4ecef8ad9ca31a8372d0c353")
    assert {op.method for op in alone} == {"get", "patch", "delete"}  # a path alone: every method


def test_a_hostile_spec_cannot_hijack_sentences(tmp_path: Path) -> None:
    """operationIds that are numbers, repeated, or spelled like references: each names only itself."""

    def op(op_id: str) -> dict[str, object]:
        return {"operationId": op_id, "summary": op_id, "responses": {"200": {"description": "ok"}}}

    spec = {
        "openapi": "3.0.3",
        "info": {"title": "hostile", "version": "1"},
        "paths": {
            "/users/{id}": {"get": op("getUser"), "delete": op("deleteUser")},
            "/one": {"get": op("1")},
            "/year": {"get": op("2024")},
            "/dup": {"get": op("dupId"), "put": op("dupId")},
        },
    }
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(spec))
    index = SearchIndex(load_spec(str(path), use_cache=False), embedder=None)
    assert index.references("delete user 1") == []  # a number in a sentence is not the operationId "1"
    assert index.references("the 2024 report of user 7") == []
    assert _top(index, "delete user 1") == "DELETE /users/{id}"
    assert [op.label for op in index.references("1")] == ["GET /one"]  # as the whole query it still names it
    assert {op.label for op in index.references("why does dupId fail")} == {"GET /dup", "PUT /dup"}


def test_twilio_paths_with_a_suffix_on_the_parameter(twilio: SearchIndex) -> None:
    """Twilio's templates end in {Sid}.json: a concrete SID with .json is that segment."""
    url = "https://api.twilio.com/2010-04-01/Accounts/AC123/Messages/SM456.json"
    assert {op.method for op in twilio.references(url)} >= {"get", "delete"}
    assert _top(twilio, f"GET {url}") == "GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"


def test_filters_still_apply(github: SearchIndex) -> None:
    hits = github.search("PATCH /repos/{owner}/{repo}", method="get")
    assert all(h.operation.method == "get" for h in hits)


@pytest.mark.parametrize(
    "query",
    [
        "list my repos",  # ordinary words, even ones that are operation names elsewhere
        "make the repo private",
        "update",
        "and/or the a/b test, 24/7",  # slashes inside words are not paths
        "look in /tmp and /etc/passwd",  # paths that are no template's
        "/",
        "GET it/them done",
        "https://example.com/",
        "see https://docs.github.com/en/rest and http://localhost:8080/x/y/z/w/v/u",
    ],
)
def test_ordinary_text_names_nothing(github: SearchIndex, query: str) -> None:
    assert github.references(query) == []


def test_no_labelled_query_names_an_operation_outright() -> None:
    """The tuning set is how people ask: none of it should be read as a name or a path."""
    specs = yaml.safe_load((ROOT / "bench" / "search_queries.yaml").read_text())["specs"]
    named = []
    for entry in specs.values():
        refs = References(load_spec(str(SHARED / entry["file"])).operations)
        named += [q["q"] for q in entry["queries"] if refs.find(q["q"])]
    assert named == []


def test_huge_and_junk_pastes_are_bounded(github: SearchIndex) -> None:
    rng = random.Random(9)
    junk = " ".join(
        "/" + "/".join("".join(rng.choices(string.ascii_lowercase + "{}", k=5)) for _ in range(rng.randint(1, 8)))
        for _ in range(20_000)
    )
    names = "GET /repos/{owner}/{repo} api.repos.update repos/delete " * 20_000
    for paste in (junk, names, "a" * 1_000_000, "/" * 1_000_000, "GET " * 250_000):
        start = time.perf_counter()
        found = github.references(paste)
        hits = github.search(paste)
        assert time.perf_counter() - start < HANG_BOUND_S
        assert len(found) <= MAX_REFERENCES and len(hits) <= 8
    assert {op.key for op in github.references(names)} == {"repos.get", "repos.update", "repos.delete"}


def test_detail_accepts_a_concrete_path_and_any_case(github: SearchIndex) -> None:
    spec: ApiSpec = github.spec
    budget = 8000
    assert "PATCH /repos/{owner}/{repo}" in answer_detail(github, "PATCH /repos/octo/hello", budget_chars=budget).text
    assert "GET /repos/{owner}/{repo}" in answer_detail(github, "Repos.Get", budget_chars=budget).text
    missing = answer_detail(github, "api.repos.updat", budget_chars=budget)
    assert missing.is_error and "api.repos.update" in missing.text  # a close name is suggested
    bare = answer_detail(github, "/repos/octo/hello", budget_chars=budget)  # a path alone: its methods
    assert bare.is_error and "api.repos.get" in bare.text and "api.repos.update" in bare.text
    long = answer_detail(github, "x" * 10_000, budget_chars=budget)
    assert long.is_error and "10,000 characters" in long.text and len(long.text) < 400
    assert [n for n in spec.schemas if n.lower() == "repository"] == ["repository"]
    assert not answer_detail(github, "schema:Repository", budget_chars=budget).is_error  # one schema, other case
    unknown = answer_detail(github, "schema:Repositry", budget_chars=budget)
    assert unknown.is_error and "schema:repository" in unknown.text


def test_detail_never_answers_with_another_method(github: SearchIndex) -> None:
    """GitHub has GET and PATCH /user, no POST: 'POST /user' is an error that names what the path has."""
    wrong = answer_detail(github, "POST /user", budget_chars=8000)
    assert wrong.is_error and "api.users.get_authenticated" in wrong.text
    assert "api.users.update_authenticated" in wrong.text
    tab = answer_detail(github, "DELETE\t/repos/octo/hello", budget_chars=8000)  # any whitespace after the method
    assert not tab.is_error and tab.text.startswith("DELETE /repos/{owner}/{repo}")


def test_operation_ids_in_a_sentence_and_in_any_case() -> None:
    index = SearchIndex(load_spec(str(ROOT / "specs" / "petstore3-openapi.yaml")), embedder=None)
    assert _top(index, "the docs say to call findPetsByTags, what does it return?") == "GET /pet/findByTags"
    assert _top(index, "why does GETPETBYID fail") == "GET /pet/{petId}"  # one operationId in any case
    assert _top(index, "GET /pet/42") == "GET /pet/{petId}"  # a literal segment beats a parameter's place
    assert _top(index, "GET /pet/findByStatus?status=sold") == "GET /pet/findByStatus"
    assert index.references("find pet by status") == []  # the same words, as words, name nothing
