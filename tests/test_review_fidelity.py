"""An adversarial review of request fidelity, rendering, naming and the policy pre-check (issue 7),
on real corpus specs and on what a model would actually write. Every request goes through the server
with the real upstream client over a recording transport (``httpx.MockTransport``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS30Validator

from codemode import load_spec
from codemode._errors import UsageError
from codemode._sandbox import LocalSandbox, check_code
from codemode._sandbox._protocol import GUEST_MODULES
from codemode._server import CodemodeServer
from codemode._settings import ServerSettings
from codemode._standin import stand_in
from codemode._upstream import HttpxUpstream

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "specs"
BOX = CORPUS / "box-openapi.json"
KINTO = CORPUS / "kinto-26.5.0-served-__api__.json"
GITHUB = CORPUS / "github-api.github.com.json"


class Wire:
    """A recording upstream transport: every request as sent, answered by ``answer``."""

    def __init__(self, answer: Any = None, status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = {"ok": True} if answer is None else answer
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if isinstance(self.answer, httpx.Response):
            return self.answer
        return httpx.Response(self.status, json=self.answer)

    def json(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)


def serve(spec_path: Path | str, wire: Wire, env: dict[str, str] | None = None, **settings: Any) -> CodemodeServer:
    spec = load_spec(str(spec_path), use_cache=False)
    settings.setdefault("upstream", {"base_url": "https://api.example.test"})
    server_settings = ServerSettings(**settings)
    server = CodemodeServer(spec, server_settings, sandbox=LocalSandbox(), env=env or {})
    server._upstream = HttpxUpstream(server_settings.upstream, transport=httpx.MockTransport(wire))
    return server


async def run(server: CodemodeServer, code: str, **kw: Any) -> dict[str, Any]:
    if server._upstream is not None:
        server._upstream._credentials = server.credentials  # type: ignore[attr-defined]
    async with server._lifespan(server.mcp):
        result = await server.execute(code, **kw)
    text = result.content[0].text  # type: ignore[union-attr]
    out: dict[str, Any] = json.loads(text)
    out["is_error"] = result.is_error
    return out


# -- The policy pre-check: real data passes, the tricks it exists for are still refused ------------


async def test_box_classification_key_passes_from_model_code() -> None:
    """Box's real metadata key ``Box__Security__Classification__Key`` (and its JSON-patch path) is data."""
    wire = Wire({"Box__Security__Classification__Key": "Sensitive"})
    server = serve(BOX, wire)
    path = "/files/{file_id}/metadata/enterprise/securityClassification-6VMVochwUWo"
    out = await run(
        server,
        f"key = 'Box__Security__Classification__Key'\n"
        f"api.call('POST {path}', file_id='12345', **{{key: 'Sensitive'}})\n"
        f"r = api.call('PUT {path}', file_id='12345',"
        f" body=[{{'op': 'replace', 'path': '/Box__Security__Classification__Key', 'value': 'Top Secret'}}])\n"
        f"result = r['Box__Security__Classification__Key']",
    )
    assert not out["is_error"], out
    assert out["result"] == "Sensitive"
    assert wire.json(0) == {"Box__Security__Classification__Key": "Sensitive"}
    assert wire.json(1) == [{"op": "replace", "path": "/Box__Security__Classification__Key", "value": "Top Secret"}]
    sent = "/files/12345/metadata/enterprise/securityClassification-6VMVochwUWo"
    assert [r.url.path for r in wire.requests] == [sent, sent]


@pytest.mark.parametrize(
    "code",
    [
        "model = 'azure__openai__gpt_4o_mini'",  # Box AI model names
        "api.call('GET /__heartbeat__')",  # Kinto's health paths
        "rule = {'expression': 'self.__namespace__ > 0 && object.x__dash__prop > 0'}",  # Kubernetes CEL escapes
        "graphql = {'__typename': 'Repo', '__proto__': None, '__meta__': 1}",
        "if __name__ == '__main__':\n    result = __name__",
    ],
)
def test_data_with_dunder_shapes_passes_the_pre_check(code: str) -> None:
    check_code(code, allowed_modules=GUEST_MODULES)


@pytest.mark.parametrize(
    "code",
    [
        "path = 'src/pkg/__init__.py'",  # a file in a repository
        "doc = {'__module__': 'billing', '__class__': 'invoice', '__dict__': None}",  # keys of a JSON document
        "s = 'x.__subclasses__'\nt = 'x__builtins__y'",
        "import operator\nf = operator.itemgetter('__init__')",  # an item, not an attribute
    ],
)
def test_strings_are_data_whatever_special_names_they_contain(code: str) -> None:
    check_code(code, allowed_modules=GUEST_MODULES)


async def test_a_python_package_path_goes_through_execute() -> None:
    """GitHub's ``GET /repos/{owner}/{repo}/contents/{path}`` for ``src/pkg/__init__.py``: the pre-check
    refused the whole run ("strings naming Python's special attributes are not allowed (__init__)")."""
    wire = Wire({"type": "file", "name": "__init__.py", "path": "src/pkg/__init__.py"})
    server = serve(GITHUB, wire, env={"CODEMODE_API_TOKEN": "ghp_test_123456"})
    out = await run(
        server,
        "r = api.call('GET /repos/{owner}/{repo}/contents/{path}', owner='o', repo='r', path='src/pkg/__init__.py')\n"
        "result = {'name': r['name'], '__module__': 'kept'}",
    )
    assert not out["is_error"], out
    assert out["result"] == {"name": "__init__.py", "__module__": "kept"}
    assert [r.url.path for r in wire.requests] == ["/repos/o/r/contents/src/pkg/__init__.py"]


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        ("import typing\nclass A:\n    x: \"__import__('os')\"\ntyping.get_type_hints(A)", "'__import__'"),
        ("def f(a: 'int', b: '().__class__') -> 'list[int]':\n    pass", "'__class__'"),
        ("def f() -> 'list[\"x.__globals__\"]':\n    pass", "'__globals__'"),
        ("import typing\nr = typing.ForwardRef('[].__class__.__base__')", "'__class__'"),
        ("x: 'eval' = 1", "'eval'"),
        ("result = '{0.__class__}'.format(1)", "format fields reaching dunder attributes"),
    ],
)
def test_strings_python_evaluates_as_code_are_checked_as_code(code: str, refused: str) -> None:
    """String annotations are code (``get_type_hints`` evaluates them); they are held to the policy,
    with the line of the string."""
    with pytest.raises(UsageError) as info:
        check_code(code, allowed_modules=GUEST_MODULES)
    assert refused in info.value.message
    line = next(i for i, text in enumerate(code.splitlines(), 1) if "__" in text or "eval" in text)
    assert f"line {line}:" in info.value.message, info.value.message


def test_annotations_that_are_plain_types_pass() -> None:
    check_code(
        "import typing\nclass A:\n    x: 'int'\n    y: 'list[A] | None' = None\n"
        "def f(a: 'A', b: 'this is prose, not code') -> 'dict[str, int]':\n    return {}\n"
        "r = typing.get_type_hints(A)",
        allowed_modules=GUEST_MODULES,
    )


async def test_strings_turned_into_attribute_access_are_refused_at_run_time() -> None:
    """Strings pass the pre-check; the guest functions that read an attribute by name refuse dunders."""
    server = serve(BOX, Wire())
    for code in (
        "import operator\nresult = str(operator.attrgetter('__class__')(1))",
        "from operator import methodcaller\nresult = methodcaller('__reduce_ex__', 2)(1)",
        "import operator\nresult = str(operator.attrgetter('real.__class__')(1))",
    ):
        out = await run(server, code)
        assert out["is_error"] and "AttributeError" in out["error"] and "dunder" in out["error"], out


# -- Request bodies: what real specs declare -------------------------------------------------------

CLOUDFLARE = CORPUS / "cloudflare-openapi.json"


async def test_cloudflare_dns_record_needs_none_of_its_read_only_fields() -> None:
    """The body is ``{required: [id, …, proxiable, created_on, modified_on], oneOf: [A, AAAA, …]}`` and the
    last three are defined, readOnly, in each branch's allOf: a request omits them (OpenAPI 3.0). (``id`` is
    required and not readOnly in this revision of the spec, so it stays required.)"""
    wire = Wire({"success": True, "result": {}})
    server = serve(CLOUDFLARE, wire, env={"CODEMODE_API_TOKEN": "cf-token-123456"})
    out = await run(
        server,
        "z = '023e105f4ecef8ad9ca31a8372d0c353'\n"
        "api.dns_records_for_a_zone.create_dns_record(z, body={'id': z, 'type': 'A', 'name': 'www',"
        " 'content': '198.51.100.4'})\n"
        "api.dns_records_for_a_zone.patch_dns_record(z, 'r1', body={'id': z, 'type': 'TXT', 'name': 't',"
        " 'content': 'v=1'})\n",
    )
    assert not out["is_error"], out
    assert wire.json(0) == {"id": "023e105f4ecef8ad9ca31a8372d0c353", "type": "A", "name": "www",
                            "content": "198.51.100.4"}  # fmt: skip
    assert [r.method for r in wire.requests] == ["POST", "PATCH"]
    out = await run(server, "api.dns_records_for_a_zone.create_dns_record('z', body={'id': 'z', 'type': 'A'})")
    assert out["is_error"] and "'name' is a required property" in json.dumps(out), out  # a writable one still is


OPENAI = CORPUS / "openai-openapi.yaml"


async def test_openai_discriminator_over_inline_branches_accepts_each_branch() -> None:
    """``RealtimeTurnDetection`` is ``oneOf: [{type: const server_vad, …}, {type: const semantic_vad, …}]`` with
    ``discriminator: {propertyName: type}`` and no mapping: a discriminator only names schemas, so the
    validator looked ``server_vad`` up as a schema name and refused every value."""
    wire = Wire()
    server = serve(OPENAI, wire)
    call = (
        "api.realtime.accept_call('c1', type='realtime', model='gpt-realtime',"
        " audio={{'input': {{'turn_detection': {}}}}})"
    )
    for good in ("{'type': 'server_vad', 'threshold': 0.5}", "{'type': 'semantic_vad', 'eagerness': 'low'}", "None"):
        out = await run(server, call.format(good))
        assert not out["is_error"], out
    assert wire.json(0)["audio"] == {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.5}}}
    for bad in ("{'type': 'loud'}", "{'type': 'server_vad', 'threshold': 'high'}"):
        out = await run(server, call.format(bad))
        assert out["is_error"] and "turn_detection" in out["error"], out
    assert len(wire.requests) == 3


DIGITALOCEAN = CORPUS / "digitalocean" / "DigitalOcean-public.v2.yaml"


async def test_a_required_body_field_the_spec_never_defines_can_be_passed() -> None:
    """DigitalOcean's ``POST /v2/uptime/checks`` requires ``method`` but defines no such property: the call
    could not be made valid at all (``unexpected keyword argument 'method'``)."""
    wire = Wire()
    server = serve(DIGITALOCEAN, wire)
    op = server.spec.operation("uptime.create_check")
    assert op is not None
    call = "api.uptime.create_check(name='x', type='https', target='https://a.example', regions=['us_east']"
    call += ", enabled=True"
    out = await run(server, call + ", method='GET')")
    assert not out["is_error"], out
    assert wire.json(0)["method"] == "GET"
    out = await run(server, call + ")")
    assert out["is_error"] and "missing required argument 'method'" in out["error"], out


async def test_cloudflare_dry_run_stand_ins_are_shaped_like_the_real_answers() -> None:
    """What a model writes against a dry run: ``rules`` items are a oneOf (by ``action``) that an allOf
    member constrains with a ``required`` list (they were the string ``'string'``), and DNS analytics'
    ``data`` items are shaped by two allOf members (each item had only one of them)."""
    server = serve(CLOUDFLARE, Wire())
    out = await run(
        server,
        "z = '023e105f4ecef8ad9ca31a8372d0c353'\n"
        "rs = api.zone_rulesets.get_zone_ruleset(z, '2f2feab2026849078ba485f918791bdc')['result']\n"
        "report = api.dns_analytics.table(z)['result']\n"
        "result = {'actions': [r['action'] for r in rs['rules']], 'enabled': [r['enabled'] for r in rs['rules']],\n"
        "          'row': sorted(report['data'][0])}",
        dry_run=True,
    )
    assert not out["is_error"], out
    assert out["result"]["actions"] and all(isinstance(a, str) for a in out["result"]["actions"])
    assert out["result"]["row"] == ["dimensions", "metrics"]
    spec = server.spec
    for key in ("zone_rulesets.get_zone_ruleset", "dns_analytics.table"):
        op = spec.operation(key)
        assert op is not None
        response = op.success_response()
        assert response is not None and response.schema is not None
        schema = {**response.schema, "components": {"schemas": spec.schemas}}
        value = stand_in(spec, response.schema)
        assert [e.message for e in OAS30Validator(schema).iter_errors(value)] == [], key


async def test_whole_floats_go_out_as_integers_where_the_spec_wants_integers() -> None:
    """Model code computes numbers (``per_page=total / 4``, ``line=12.0``): JSON Schema counts 3.0 as an
    integer, so validation passed and ``per_page=25.0`` / ``"line": 12.0`` went on the wire, which servers
    that parse integers refuse. A whole float is sent as an integer where the schema wants one; a ``number``
    keeps its float and a fractional value is still refused."""
    wire = Wire({"id": 1})
    server = serve(GITHUB, wire, env={"CODEMODE_API_TOKEN": "ghp_test_123456"})
    out = await run(
        server,
        "total = 100\n"
        "api.call('GET /repos/{owner}/{repo}/issues', owner='o', repo='r', per_page=total / 4, page=2.0)\n"
        "api.call('POST /repos/{owner}/{repo}/pulls/{pull_number}/comments', owner='o', repo='r',"
        " pull_number=7.0, body='nit', commit_id='abc', path='a.py', line=12.0, start_line=10.0,"
        " side='RIGHT')\n",
    )
    assert not out["is_error"], out
    first, second = wire.requests
    assert dict(first.url.params) == {"per_page": "25", "page": "2"}
    assert second.url.path == "/repos/o/r/pulls/7/comments"
    sent = json.loads(second.content)
    assert sent["line"] == 12 and sent["start_line"] == 10
    assert b"12.0" not in second.content and b"10.0" not in second.content
    out = await run(server, "api.call('GET /repos/{owner}/{repo}/issues', owner='o', repo='r', per_page=2.5)")
    assert out["is_error"] and "per_page" in out["error"], out
    assert len(wire.requests) == 2
