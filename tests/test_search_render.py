"""search ranking, filters, budgets and the rendered signatures (the public text the model reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from codemode import load_spec
from codemode._format import approx_tokens
from codemode._naming import NameRequest, assign_names, snake
from codemode._render import describe_operation, render_schema, signature
from codemode._search import SearchIndex
from codemode._server import CodemodeServer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "specs"


class _NoRun:
    def run(self, *a: Any, **k: Any) -> Any:
        raise AssertionError("search must not execute code here")

    def prepare(self) -> None:
        return None


@pytest.fixture(scope="module")
def petstore() -> Any:
    return load_spec(str(ROOT / "specs" / "petstore3-openapi.yaml"))


def test_signature_shows_types_defaults_literals_and_return(petstore: Any) -> None:
    op = petstore.operation("pet.find_pets_by_status")
    assert signature(op) == (
        "api.pet.find_pets_by_status(*, status: Literal['available', 'pending', 'sold'] = 'available') -> list[Pet]"
    )
    add = signature(petstore.operation("pet.add"))
    assert add.startswith("api.pet.add(*, name: str, photoUrls: list[str], id: int | None = None")
    assert signature(petstore.operation("pet.get_by_id")) == "api.pet.get_by_id(petId: int) -> Pet"


def test_detail_and_typed_dict_views(petstore: Any) -> None:
    text = describe_operation(petstore, petstore.operation("pet.add"))
    assert text.splitlines()[0] == "POST /pet"
    assert "class Pet(TypedDict):" in text and "class Category(TypedDict):" in text
    assert "photoUrls: list[str]" in render_schema(petstore, "Pet")
    small = describe_operation(petstore, petstore.operation("pet.add"), budget_chars=900)
    assert "# not shown (budget)" in small and len(small) < 1200


def test_search_ranks_and_filters(petstore: Any) -> None:
    index = SearchIndex(petstore)
    assert index.search("delete a pet")[0].operation.label == "DELETE /pet/{petId}"
    assert index.search("place an order for a pet")[0].operation.label == "POST /store/order"
    only_get = index.search("pet", method="GET")
    assert only_get and all(h.operation.method == "get" for h in only_get)
    store = index.search("", tag="store")
    assert store and all(h.operation.path.startswith("/store") for h in store)
    assert all(h.operation.path.startswith("/user") for h in index.search("user", path_prefix="/user"))
    assert index.search("zzzqqq") == []
    assert index.suggest("pett") and any(s.startswith("tag:") for s in index.suggest("pett"))


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/specs is not beside the checkout")
async def test_search_answer_stays_in_budget_on_a_huge_spec(tmp_path: Path) -> None:
    spec = load_spec(str(SHARED / "github-api.github.com.json"), cache_dir=tmp_path)
    server = CodemodeServer(spec, sandbox=_NoRun())
    result = await server.search("list pull requests", limit=25)
    text = result.content[0].text  # type: ignore[union-attr]
    assert approx_tokens(text) <= server.settings.search.max_response_tokens
    assert "GET /repos/{owner}/{repo}/pulls" in text and "api.pulls.list(" in text
    empty = await server.search("xqzv wqpt")
    assert "No operation of GitHub" in empty.content[0].text  # type: ignore[union-attr]
    detail = await server.search(detail="pulls/create")
    assert detail.content[0].text.startswith("POST /repos/{owner}/{repo}/pulls")  # type: ignore[union-attr]
    missing = await server.search(detail="api.pulls.nope")
    assert missing.is_error and "Did you mean" in missing.content[0].text  # type: ignore[union-attr]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/specs is not beside the checkout")
def test_keyword_search_puts_the_resource_a_query_names_first(tmp_path: Path) -> None:
    """Every issue operation mentions issues; "create issue" means POST .../issues itself (the
    keyword ranker answers alone while the semantic index is built, or without the extra)."""
    from codemode._search import SearchIndex

    index = SearchIndex(load_spec(str(SHARED / "github-api.github.com.json"), cache_dir=tmp_path), embedder=None)
    assert index.search("create an issue")[0].operation.label == "POST /repos/{owner}/{repo}/issues"
    assert "GET /repos/{owner}/{repo}/pulls" in [h.operation.label for h in index.search("list pull requests", limit=3)]


async def test_tools_list_is_exactly_two_small_tools(petstore: Any) -> None:
    server = CodemodeServer(petstore, sandbox=_NoRun())
    tools = await server.mcp.list_tools()
    assert [t.name for t in tools] == ["search", "execute"]
    assert "query" in tools[0].input_schema["properties"] and tools[1].input_schema["required"] == ["code"]
    text = "".join(t.model_dump_json(by_alias=True, exclude_none=True) for t in tools)
    assert approx_tokens(text) < 1000


def test_naming_policy() -> None:
    assert snake("listDNSRecords") == "list_dns_records"
    reqs = [
        NameRequest("get", "/repos/{owner}/{repo}", "repos/get", []),
        NameRequest(
            "get", "/zones/{id}/dns_records", "dns-records-for-a-zone-list-dns-records", ["DNS Records for a Zone"]
        ),
        NameRequest("get", "/api/contents/{path}", None, ["contents"]),
        NameRequest("get", "/api/contents/{path}", None, ["contents"]),
        NameRequest("post", "/x", "class", ["call"]),
        NameRequest("get", "/" + "very_long_segment/" * 10, "a" * 80 + "Thing", ["t"]),
    ]
    names = assign_names(reqs)
    assert names[0] == ("repos", "get")
    assert names[1] == ("dns_records_for_a_zone", "list_dns_records")
    assert names[2] == ("contents", "get") and names[3] == ("contents", "get_2")
    assert names[4] == ("call_", "class_")
    assert all(len(f"{g}.{n}") <= 64 for g, n in names)


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        # xkcd: no operationIds, format suffixes and numbers in the only segment
        (
            [NameRequest("get", "/info.0.json", None, []), NameRequest("get", "/{comicId}/info.0.json", None, [])],
            [("info", "list"), ("info", "list_by_comic_id")],
        ),
        # Bitbucket: a version without a "v" is not a group
        (
            [
                NameRequest(
                    "post",
                    "/2.0/repositories/{workspace}/{repo_slug}/pullrequests/{pull_request_id}/merge",
                    "mergePullRequest",
                    ["2.0"],
                )
            ],
            [("repositories", "merge_pull_request")],
        ),
        # Twilio: tags lead with the API version
        (
            [
                NameRequest(
                    "get",
                    "/2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers/{ResourceSid}/AssignedAddOns/"
                    "{AssignedAddOnSid}/Extensions/{Sid}.json",
                    "FetchIncomingPhoneNumberAssignedAddOnExtension",
                    ["Api20100401AssignedAddOn"],
                ),
                NameRequest(
                    "get",
                    "/2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers/{ResourceSid}/AssignedAddOns/"
                    "{AssignedAddOnSid}.json",
                    "FetchIncomingPhoneNumberAssignedAddOn",
                    ["Api20100401AssignedAddOn"],
                ),
            ],
            [
                ("assigned_add_on", "fetch_incoming_phone_number_extension"),
                ("assigned_add_on", "fetch_incoming_phone_number_assigned_add_on"),
            ],
        ),
        # Stripe: long operationIds keep the words that set siblings apart
        (
            [
                NameRequest(
                    "delete",
                    "/v1/customers/{customer}/subscriptions/{subscription_exposed_id}",
                    "DeleteCustomersCustomerSubscriptionsSubscriptionExposedId",
                    [],
                ),
                NameRequest(
                    "delete",
                    "/v1/customers/{customer}/subscriptions/{subscription_exposed_id}/discount",
                    "DeleteCustomersCustomerSubscriptionsSubscriptionExposedIdDiscount",
                    [],
                ),
            ],
            [
                ("customers", "delete_customer_subscriptions_subscription_exposed_id"),
                ("customers", "delete_customer_subscription_exposed_id_discount"),
            ],
        ),
        # Kubernetes: a shortened name never takes the name of an operation that fits as it is
        (
            [
                NameRequest(
                    "delete",
                    "/apis/a.k8s.io/v1/mutatingadmissionpolicies",
                    "deleteAdmissionregistrationV1CollectionMutatingAdmissionPolicy",
                    ["admissionregistration_v1"],
                ),
                NameRequest(
                    "delete",
                    "/apis/a.k8s.io/v1/mutatingadmissionpolicies/{name}",
                    "deleteAdmissionregistrationV1MutatingAdmissionPolicy",
                    ["admissionregistration_v1"],
                ),
            ],
            [
                ("admissionregistration_v1", "delete_collection_mutating_policy"),
                ("admissionregistration_v1", "delete_mutating_admission_policy"),
            ],
        ),
        # Box: long tags keep the words that set them apart
        (
            [
                NameRequest(
                    "get",
                    "/shield_information_barrier_segments/{id}",
                    "get_shield_information_barrier_segments_id",
                    ["Shield information barrier segments"],
                ),
                NameRequest(
                    "get",
                    "/shield_information_barrier_segment_members/{id}",
                    "get_shield_information_barrier_segment_members_id",
                    ["Shield information barrier segment members"],
                ),
            ],
            [("shield_barrier_segments", "get_id"), ("shield_barrier_segment_members", "get_id")],
        ),
    ],
)
def test_names_read_well_without_numbers(requests: list[NameRequest], expected: list[tuple[str, str]]) -> None:
    assert assign_names(requests) == expected


def test_corpus_names_have_no_collision_numbers_and_no_version_groups() -> None:
    """Across the corpus, no `_2` suffixes and no groups made of version numbers (`g_2_0`, `info_0_json`)."""
    import json
    import re

    if not SHARED.is_dir():
        pytest.skip("../shared/specs is not beside the checkout")
    numbered: list[str] = []
    for entry in json.loads((SHARED / "index.json").read_text()):
        spec = load_spec(str(SHARED / entry["file"]))
        keys = [op.key for op in spec.operations]
        numbered += [k for k in keys if re.search(r"_\d+$", k) and re.sub(r"_\d+$", "", k) in keys]
        assert not [k for k in keys if re.match(r"g_\d|\w*_\d+_json\.", k)], entry["file"]
    assert numbered == []


def test_type_text_handles_every_all_of_shape() -> None:
    from codemode._render import type_text

    inline = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert type_text({"allOf": [inline]}) == "dict"  # one inline member (crashed once on Cloudflare)
    assert type_text({"allOf": [inline, {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]}) == (
        "{a?: str, b: int}"
    )
    assert type_text({"allOf": [{"$ref": "#/components/schemas/A"}, inline]}) == "A"
    assert type_text({"allOf": [{"$ref": "#/components/schemas/A"}, {"$ref": "#/components/schemas/B"}]}) == "A & B"


async def test_sessions_share_one_executor_until_the_last_leaves(petstore: Any) -> None:
    server = CodemodeServer(petstore, sandbox=_NoRun())
    async with server._lifespan(server.mcp):
        first = server.executor()
        async with server._lifespan(server.mcp):  # a second SSE connection
            assert server.executor() is first
        assert server.executor() is first  # the second leaving does not break the first
    with pytest.raises(Exception, match="not running"):
        server.executor()


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("GitHub's official OpenAPI spec + Octokit extension", "github-octokit"),
        ("Swagger Petstore - OpenAPI 3.0", "petstore"),
        ("Twilio - Studio", "twilio-studio"),
        ("OpenAPI", "api"),
    ],
)
def test_server_names_are_short_slugs(title: str, name: str) -> None:
    from codemode._server import server_name

    assert server_name(title) == name


async def test_server_info_and_the_instructions_example_come_from_the_served_spec(petstore: Any) -> None:
    from codemode import __version__

    server = CodemodeServer(petstore, sandbox=_NoRun())
    init = server.mcp._lowlevel_server.create_initialization_options()
    assert init.server_name == "petstore" and init.server_version == __version__
    text = init.instructions or ""
    assert "`api.pet.get_by_id(petId: int) -> Pet  # GET /pet/{petId}`" in text
    assert 'search(detail="api.pet.get_by_id")' in text and "api.pets.get(" not in text
    if SHARED.is_dir():
        github = load_spec(str(SHARED / "github-api.github.com.json"))
        init = CodemodeServer(github, sandbox=_NoRun()).mcp._lowlevel_server.create_initialization_options()
        example = (init.instructions or "").split("e.g. `", 1)[1].split("`", 1)[0]
        key = example.split("(", 1)[0].removeprefix("api.")
        assert github.operation(key) is not None, example
        assert init.server_name == "github-octokit"
