"""execute through the executor: policy, binding, validation, errors, dry runs (fast: LocalSandbox + fake upstream)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from codemode import UpstreamError, load_spec
from codemode._execute import Executor
from codemode._format import format_execute
from codemode._sandbox import LocalSandbox
from codemode._scrub import Scrubber
from codemode._settings import ExecuteSettings
from codemode._upstream import UpstreamRequest, UpstreamResponse

PETSTORE = Path(__file__).resolve().parents[1] / "specs" / "petstore3-openapi.yaml"


class FakeUpstream:
    """An in-memory upstream: records requests, answers from a table keyed by (method, path)."""

    def __init__(self, answers: dict[tuple[str, str], tuple[int, Any]] | None = None) -> None:
        self.requests: list[UpstreamRequest] = []
        self.answers = answers or {}

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        self.requests.append(request)
        path = request.url.split("/api/v3", 1)[1]
        if path == "/store/inventory":
            raise UpstreamError("GET /boom timed out after timeout_seconds=1", code="upstream.timeout")
        status, body = self.answers.get((request.method, path), (200, {"ok": True}))
        return UpstreamResponse(status=status, headers={}, body=body, elapsed_ms=1.0, attempts=1)

    async def aclose(self) -> None:
        return None


@pytest.fixture(scope="module")
def spec() -> Any:
    return load_spec(str(PETSTORE))


def make(spec: Any, upstream: FakeUpstream | None = None, **settings: Any) -> tuple[Executor, FakeUpstream]:
    up = upstream or FakeUpstream()
    return Executor(spec, LocalSandbox(), up, ExecuteSettings(**settings)), up


async def run(executor: Executor, code: str, **kw: Any) -> dict[str, Any]:
    report = await executor.execute(code, **kw)
    text, is_error = format_execute(report, max_chars=executor.settings.max_response_chars)
    out = json.loads(text) if text.startswith("{") else {"text": text}
    out["is_error"] = is_error
    return out


async def test_calls_build_real_requests(spec: Any) -> None:
    ex, up = make(spec, FakeUpstream({("GET", "/pet/7"): (200, {"id": 7, "name": "Rex"})}))
    out = await run(ex, "p = api.pet.get_by_id(7)\nprint(p['name'])\nresult = p")
    assert out["stdout"] == "Rex\n"
    assert out["result"] == {"id": 7, "name": "Rex"}
    assert out["calls"][0]["method"] == "GET" and out["calls"][0]["path"] == "/pet/{petId}"
    assert up.requests[0].url == "https://petstore3.swagger.io/api/v3/pet/7"
    assert not out["is_error"]


async def test_body_fields_query_and_headers(spec: Any) -> None:
    ex, up = make(spec)
    await run(
        ex,
        "api.pet.add(name='Rex', photoUrls=['u'], status='sold')\n"
        "api.pet.find_pets_by_status(status='sold')\napi.pet.delete(3)",
    )
    add, find, delete = up.requests
    assert add.method == "POST" and add.json == {"name": "Rex", "photoUrls": ["u"], "status": "sold"}
    assert find.params == [("status", "sold")]
    assert delete.headers == {} and delete.url.endswith("/pet/3")
    # `api_key` is the parameter the spec's apiKey scheme names: a credential, filled in host-side.
    assert ("petstore_auth", "api_key") in delete.security
    out = await run(ex, "try:\n    api.pet.delete(3, api_key='k')\nexcept PermissionError as e:\n    result = str(e)")
    assert "'api_key' is filled in by the server (a credential)" in out["result"] and len(up.requests) == 3


async def test_generic_escape_hatch_by_operation_id_and_path(spec: Any) -> None:
    ex, up = make(spec)
    out = await run(ex, "api.call('getPetById', petId=1)\napi.call('GET /pet/{petId}', petId=2)")
    assert not out["is_error"], out
    assert [r.url.rsplit("/", 1)[1] for r in up.requests] == ["1", "2"]


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("api.pet.get_by_id()", "api.pet.get_by_id: missing required argument 'petId'"),
        ("api.pet.get_by_id(1, 2)", "takes 1 positional argument(s)"),
        ("api.pet.find_pets_by_status(stauts='sold')", "unexpected keyword argument 'stauts' (did you mean 'status'?)"),
        ("api.pet.find_pets_by_status(status='gone')", "argument status: 'gone' is not one of"),
        ("api.pet.get_by_id('seven')", "argument petId: 'seven' is not of type 'integer'"),
    ],
)
async def test_bad_calls_raise_type_error_written_as_the_model_wrote_them(spec: Any, code: str, fragment: str) -> None:
    ex, up = make(spec)
    out = await run(ex, f"try:\n    {code}\nexcept TypeError as e:\n    print(str(e))")
    assert fragment in out["stdout"], out
    assert up.requests == []


async def test_unknown_operation_is_attribute_error_with_suggestion(spec: Any) -> None:
    ex, _ = make(spec)
    out = await run(ex, "api.pet.get_by_idd(1)")
    assert out["is_error"]
    assert out["error"].startswith("AttributeError: api.pet.get_by_idd: no such operation")
    assert "api.pet.get_by_id" in out["error"]


async def test_upstream_errors_are_catchable_api_errors(spec: Any) -> None:
    ex, _ = make(spec, FakeUpstream({("GET", "/pet/404"): (404, {"message": "Pet not found"})}))
    code = (
        "try:\n    api.pet.get_by_id(404)\nexcept ApiError as e:\n"
        "    result = {'status': e.status, 'body': e.body, 'op': e.operation}"
    )
    out = await run(ex, code)
    assert out["result"] == {"status": 404, "body": {"message": "Pet not found"}, "op": "pet.get_by_id"}
    assert out["calls"][0]["status"] == 404
    assert not out["is_error"]


async def test_timeouts_are_api_errors_too(spec: Any) -> None:
    ex, _ = make(spec)
    code = "try:\n    api.store.get_inventory()\nexcept ApiError as e:\n    result = [str(e), e.status, e.operation]"
    out = await run(ex, code)
    assert out["result"] == ["GET /boom timed out after timeout_seconds=1", None, "store.get_inventory"]
    assert out["calls"][0]["status"] == "upstream.timeout"


async def test_read_only_allow_and_deny(spec: Any) -> None:
    ex, up = make(spec, read_only=True)
    out = await run(ex, "api.pet.get_by_id(1)\napi.pet.add(name='x', photoUrls=[])")
    assert out["is_error"] and out["error"].startswith("PermissionError: api.pet.add (POST /pet) is a write operation")
    assert len(up.requests) == 1
    ex, up = make(spec, deny=("pet.delete",))
    out = await run(ex, "api.pet.delete(1)")
    assert "denied by this server's configuration" in out["error"]
    ex, up = make(spec, allow=("pet.get_*", "placeOrder"))
    out = await run(ex, "api.store.place_order()\napi.pet.get_by_id(1)\napi.pet.find_pets_by_status()")
    assert "not in this server's allow-list" in out["error"] and len(up.requests) == 2


async def test_call_limit_is_enforced_and_catchable(spec: Any) -> None:
    """No call goes out past max_calls; code that catches CallLimitExceeded finishes, with a note."""
    ex, up = make(spec, max_calls=3)
    code = (
        "n = 0\nfor i in range(10):\n    try:\n        api.pet.get_by_id(i)\n        n += 1\n"
        "    except CallLimitExceeded:\n        break\nresult = n"
    )
    out = await run(ex, code)
    assert out["result"] == 3 and len(up.requests) == 3
    assert not out["is_error"] and "error" not in out
    assert any("max_calls=3" in note and "caught" in note for note in out["notes"])
    uncaught = await run(ex, "for i in range(10):\n    api.pet.get_by_id(i)")
    assert uncaught["is_error"] and "CallLimitExceeded" in uncaught["error"] and "max_calls=3" in uncaught["error"]
    assert len(up.requests) == 6


async def test_a_caught_timeout_still_fails_the_run(req_spec: Any) -> None:
    import asyncio

    from codemode._sandbox import SandboxLimits

    class Slow(Recorder):
        async def send(self, request: UpstreamRequest) -> UpstreamResponse:
            await asyncio.sleep(5)
            return await super().send(request)

    ex = Executor(req_spec, LocalSandbox(), Slow(), ExecuteSettings(limits=SandboxLimits(timeout_seconds=0.5)))
    out = await run(ex, "try:\n    api.call('putRaw', body={})\nexcept CallLimitExceeded:\n    result = 'caught'")
    assert out["is_error"] and "timeout_seconds=0.5" in out["error"]


async def test_dry_run_touches_nothing_and_returns_schema_shaped_values(spec: Any) -> None:
    ex, up = make(spec)
    out = await run(ex, "p = api.pet.get_by_id(1)\nresult = sorted(p)", dry_run=True)
    assert up.requests == []
    assert {"name", "photoUrls", "status"} <= set(out["result"])
    assert out["calls"][0]["status"] == "dry-run"


async def test_policy_rejects_before_running(spec: Any) -> None:
    ex, up = make(spec)
    out = await run(ex, "api.pet.get_by_id(1)\n().__class__.__bases__")
    assert out["is_error"] and "Code rejected before running" in out["text"]
    assert "__class__" in out["text"] and up.requests == []


async def test_answer_is_cut_to_the_client_limit(spec: Any) -> None:
    ex, _ = make(spec, max_response_chars=2000)
    out = await run(ex, "print('x' * 50000)\nresult = list(range(3))")
    assert len(json.dumps({k: v for k, v in out.items() if k != "is_error"})) <= 2100
    assert any("max_response_chars=2000" in n for n in out["notes"])


async def test_search_code_sees_spec_not_api(spec: Any) -> None:
    ex, up = make(spec)
    report = await ex.run_search_code("result = [o['name'] for o in spec.operations if o['method'] == 'DELETE']")
    assert report.outcome is not None and sorted(report.outcome.result) == [
        "api.pet.delete",
        "api.store.delete_order",
        "api.user.delete",
    ]
    report = await ex.run_search_code("api.pet.get_by_id(1)")
    assert report.outcome is not None and report.outcome.error is not None
    assert report.outcome.error.type == "NameError" and up.requests == []


async def test_responses_that_differ_from_the_spec_are_notes_not_failures(spec: Any) -> None:
    ex, _ = make(spec, FakeUpstream({("GET", "/pet/5"): (200, {"id": "five", "name": "Rex", "photoUrls": []})}))
    out = await run(ex, "result = api.pet.get_by_id(5)['id']")
    assert out["result"] == "five" and not out["is_error"]
    assert any("api.pet.get_by_id: the response differs from the spec at result['id']" in n for n in out["notes"])


async def test_path_arguments_cannot_escape_the_operation_path() -> None:
    spec = load_spec(str(PETSTORE.parent / "jupyter_server-2.21.1-api.yaml"))
    up = FakeUpstream()
    ex = Executor(spec, LocalSandbox(), up, ExecuteSettings(), base_url="http://127.0.0.1:1/api/v3")
    out = await run(ex, "api.contents.get('a/b.ipynb')\napi.contents.get('../../etc/passwd')")
    assert up.requests[0].url == "http://127.0.0.1:1/api/v3/api/contents/a/b.ipynb"
    assert "'../../etc/passwd' contains a '.' or '..' segment" in out["error"] and len(up.requests) == 1
    up.requests.clear()
    out = await run(ex, "api.sessions.get('x/../../y')")  # a uuid parameter: refused by its format first
    assert "is not a 'uuid'" in out["error"] and up.requests == []
    out = await run(ex, "api.terminals.get('x/../../y')")
    assert "would leave the operation's path" in out["error"] and up.requests == []
    await run(ex, "api.terminals.get('x/y@evil.com:80')")
    assert up.requests[0].url == "http://127.0.0.1:1/api/v3/api/terminals/x%2Fy%40evil.com%3A80"


REQUESTS_SPEC = """
openapi: 3.1.0
info: {title: Req, version: "1"}
servers: [{url: "https://gw.example.com/svc-a/v1"}]
paths:
  /repos/{owner}/{repo}:
    get:
      operationId: getRepo
      parameters:
        - {name: owner, in: path, required: true, schema: {type: string}}
        - {name: repo, in: path, required: true, schema: {type: string}}
        - {name: X-Trace, in: header, schema: {type: string}}
        - {name: session, in: cookie, schema: {type: string}}
        - {name: ids, in: query, style: pipeDelimited, explode: false, schema: {type: array, items: {type: integer}}}
      responses: {"200": {description: ok}}
  /items/{id}:
    patch:
      operationId: patchItem
      parameters: [{name: id, in: path, required: true, schema: {type: string}}]
      requestBody:
        content:
          application/json:
            schema:
              type: object
              required: [id, name]
              properties:
                id: {type: string, readOnly: true}
                name: {type: string}
                note: {type: [string, "null"]}
      responses: {"200": {description: ok}}
  /raw:
    put:
      operationId: putRaw
      requestBody: {content: {application/json: {schema: {type: object}}}}
      responses: {"204": {description: ok}}
  /upload:
    post:
      operationId: upload
      requestBody:
        content:
          multipart/form-data:
            schema:
              type: object
              properties:
                file: {type: string, format: binary}
                tags: {type: array, items: {type: string}}
      responses: {"200": {description: ok}}
"""


@pytest.fixture
def req_spec(tmp_path: Path) -> Any:
    src = tmp_path / "req.yaml"
    src.write_text(REQUESTS_SPEC)
    return load_spec(str(src), use_cache=False)


def multipart_parts(request: UpstreamRequest) -> list[tuple[str, str | None, str, bytes]]:
    """``(name, filename, content type, content)`` of each part of a multipart request."""
    from email.parser import BytesParser

    assert request.content is not None
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser().parsebytes(head + request.content)
    return [
        (part.get_param("name", header="content-disposition"), part.get_filename(), part.get_content_type(),
         part.get_payload(decode=True))
        for part in message.get_payload()
    ]  # fmt: skip


class Recorder(FakeUpstream):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        self.requests.append(request)
        return UpstreamResponse(status=200, headers={}, body={"ok": True}, elapsed_ms=1.0, attempts=1)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        ("api.call('getRepo', '..', '..')", "would leave the operation's path"),
        ("api.call('getRepo', 'a', '')", "'' is not allowed as a path segment"),
        ("api.call('getRepo', 'a', 'b', **{'X-Trace': 'x\\r\\nEvil: 1'})", "cannot be sent in a header"),
        ("api.call('getRepo', 'a', 'b', session='a; admin=1')", "cannot be sent in a cookie"),
        ("api.call('getRepo', 'a', 'b', **{'X-Trace': 'caf\\u00e9\\u2603'})", "must be ASCII text"),
    ],
)
async def test_values_that_would_change_the_request_are_refused(req_spec: Any, call: str, fragment: str) -> None:
    up = Recorder()
    ex = Executor(req_spec, LocalSandbox(), up, ExecuteSettings())
    out = await run(ex, call)
    assert out["is_error"] and fragment in out["error"], out
    assert up.requests == []


async def test_request_serialisation_styles_nulls_and_files(req_spec: Any) -> None:
    up = Recorder()
    ex = Executor(req_spec, LocalSandbox(), up, ExecuteSettings())
    code = (
        "api.call('getRepo', 'o w', 'r', ids=[1, 2, 3])\n"
        "api.call('patchItem', '7', name='n', note=None)\n"  # readOnly id may be omitted; null is sent
        "api.call('putRaw', body={})\n"
        "api.call('upload', file={'filename': 'a.txt', 'content_base64': 'aGk='}, tags=['x', 'y'])\n"
    )
    out = await run(ex, code)
    assert not out["is_error"], out
    get, patch, put, upload = up.requests
    assert get.url == "https://gw.example.com/svc-a/v1/repos/o%20w/r" and get.params == [("ids", "1|2|3")]
    assert patch.json == {"name": "n", "note": None}
    assert put.json == {}
    assert multipart_parts(upload) == [
        ("file", "a.txt", "application/octet-stream", b"hi"),
        ("tags", None, "text/plain", b"x"),  # an array: one part per item
        ("tags", None, "text/plain", b"y"),
    ]
    bad = await run(ex, "api.call('upload', file={'content_base64': '***'})")
    assert "content_base64 is not valid base64" in bad["error"]


async def test_oversized_call_payload_is_refused(req_spec: Any) -> None:
    up = Recorder()
    ex = Executor(req_spec, LocalSandbox(), up, ExecuteSettings(max_call_bytes=5000))
    out = await run(ex, "api.call('putRaw', body={'x': 'a' * 10000})")
    assert "over max_call_bytes=5000" in out["error"] and up.requests == []


async def test_time_waiting_on_the_upstream_counts_against_the_timeout(req_spec: Any) -> None:
    import asyncio

    from codemode._sandbox import SandboxLimits

    class Slow(Recorder):
        async def send(self, request: UpstreamRequest) -> UpstreamResponse:
            await asyncio.sleep(5)
            return await super().send(request)

    ex = Executor(req_spec, LocalSandbox(), Slow(), ExecuteSettings(limits=SandboxLimits(timeout_seconds=0.5)))
    started = asyncio.get_running_loop().time()
    out = await run(ex, "api.call('putRaw', body={})")
    assert asyncio.get_running_loop().time() - started < 3
    assert out["is_error"] and "timeout_seconds=0.5" in out["error"]
    assert out["calls"][0]["status"] == "timeout"


async def test_host_failures_are_internal_errors_not_api_errors(
    req_spec: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Recorder):
        async def send(self, request: UpstreamRequest) -> UpstreamResponse:
            raise KeyError("secret-value-123")

    ex = Executor(req_spec, LocalSandbox(), Broken(), ExecuteSettings(), scrubber=Scrubber(["secret-value-123"]))
    code = (
        "try:\n    api.call('putRaw', body={})\nexcept ApiError as e:\n    result = 'ApiError'\n"
        "except RuntimeError as e:\n    result = str(e)"
    )
    with caplog.at_level(logging.ERROR, logger="codemode.execute"):
        out = await run(ex, code)
    assert out["result"].startswith("internal error in the codemode server (KeyError)")
    assert "not an answer from the API" in out["result"]
    assert any("failed internally" in note for note in out["notes"])
    assert "secret-value-123" not in json.dumps(out)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Traceback" in logged and "in send" in logged and "secret-value-123" not in logged


async def test_dry_run_works_without_a_base_url(tmp_path: Path) -> None:
    src = tmp_path / "nosrv.yaml"
    src.write_text(REQUESTS_SPEC.replace('servers: [{url: "https://gw.example.com/svc-a/v1"}]', ""))
    spec = load_spec(str(src), use_cache=False)
    ex = Executor(spec, LocalSandbox(), Recorder(), ExecuteSettings())
    out = await run(ex, "result = api.call('putRaw', body={})", dry_run=True)
    assert not out["is_error"] and out["calls"][0]["status"] == "dry-run"


async def test_non_json_floats_and_lone_surrogates_still_give_valid_json(spec: Any) -> None:
    ex, _ = make(spec, FakeUpstream({("GET", "/pet/1"): (200, {"name": "\ud83d"})}))
    report = await ex.execute("result = [float('nan'), api.pet.get_by_id(1)['name']]")
    text, is_error = format_execute(report, max_chars=10_000)
    assert not is_error
    assert json.loads(text)["result"][0] == "nan"
    text.encode("utf-8")  # sendable


@pytest.mark.parametrize("value", ["..\\\\..\\\\admin", ".. ", "...", "a/../b"])
async def test_dot_segments_in_any_spelling_are_refused(req_spec: Any, value: str) -> None:
    up = Recorder()
    ex = Executor(req_spec, LocalSandbox(), up, ExecuteSettings())
    out = await run(ex, f"api.call('getRepo', 'o', {value!r})")
    assert "would leave the operation's path" in out["error"] and up.requests == []


async def test_none_is_not_given_unless_the_schema_allows_null(req_spec: Any) -> None:
    up = Recorder()
    ex = Executor(req_spec, LocalSandbox(), up, ExecuteSettings())
    out = await run(ex, "api.call('patchItem', '1', name='n', note=None)\napi.call('upload', tags=None, file=None)")
    assert not out["is_error"], out
    assert up.requests[0].json == {"name": "n", "note": None}  # note is nullable: JSON null is sent
    assert up.requests[1].files is None and up.requests[1].data is None  # not nullable: not sent


async def test_upload_metadata_cannot_inject_part_headers(req_spec: Any) -> None:
    up = Recorder()
    ex = Executor(req_spec, LocalSandbox(), up, ExecuteSettings())
    out = await run(ex, "api.call('upload', file={'content': 'x', 'content_type': 'text/plain\\r\\nX-Evil: 1'})")
    assert "may not contain line breaks" in out["error"] and up.requests == []


async def test_escaped_output_and_unicode_results_stay_within_limits(spec: Any) -> None:
    ex, _ = make(spec, max_response_chars=5000)
    out = await run(ex, "print('\\x01' * 64000)\nresult = ['\\\\' * 1000] * 100")
    assert "answer cut" in " ".join(out["notes"])  # valid JSON even though escaping grows the text
    ex, _ = make(spec, max_response_chars=200_000)
    out = await run(ex, "result = 'é' * 50000")  # 100 KB of UTF-8, under max_result_bytes
    assert not out["is_error"] and len(out["result"]) == 50000


async def test_building_the_isolate_does_not_count_against_the_timeout(req_spec: Any) -> None:
    """The first execute after an install builds the isolate (tens of seconds); the run's deadline starts after."""
    import time

    from codemode._sandbox import SandboxLimits

    class SlowToBuild(LocalSandbox):
        built = False

        def prepare(self) -> None:
            if not self.built:
                time.sleep(1.5)
                self.built = True

        def run(self, code: str, bridge: Any, **kw: Any) -> Any:
            self.prepare()  # as WasmSandbox.run does
            return super().run(code, bridge, **kw)

    up = Recorder()
    ex = Executor(req_spec, SlowToBuild(), up, ExecuteSettings(limits=SandboxLimits(timeout_seconds=1)))
    out = await run(ex, "result = api.call('putRaw', body={})")
    assert not out["is_error"], out
    assert out["result"] == {"ok": True} and len(up.requests) == 1


async def test_error_bodies_are_cut_to_max_error_body_chars(spec: Any) -> None:
    long = {"detail": "x" * 10_000}
    ex, _ = make(spec, FakeUpstream({("GET", "/pet/1"): (500, long), ("GET", "/pet/2"): (500, "y" * 10_000)}),
                 max_error_body_chars=100)  # fmt: skip
    code = (
        "out = []\nfor i in (1, 2):\n    try:\n        api.pet.get_by_id(i)\n    except ApiError as e:\n"
        "        out.append(e.body)\nresult = out"
    )
    first, second = (await run(ex, code))["result"]
    assert first == json.dumps(long)[:100] + "…[truncated]"
    assert second == "y" * 100 + "…[truncated]"
    ex, _ = make(spec, FakeUpstream({("GET", "/pet/1"): (500, {"detail": "short"})}), max_error_body_chars=100)
    assert (await run(ex, code.replace("(1, 2)", "(1,)")))["result"] == [{"detail": "short"}]  # kept as it is


async def test_response_notes_are_capped(spec: Any) -> None:
    wrong = {("GET", f"/pet/{i}"): (200, {"id": f"s{i}", "name": "n", "photoUrls": []}) for i in range(10)}
    ex, _ = make(spec, FakeUpstream(wrong))
    out = await run(ex, "for i in range(10):\n    api.pet.get_by_id(i)")
    differs = [n for n in out["notes"] if "differs from the spec" in n]
    assert len(differs) == 3, out["notes"]  # MAX_RESPONSE_NOTES
