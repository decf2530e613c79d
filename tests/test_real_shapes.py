"""Requests the way real APIs' specs say, on small specs that reproduce Stripe, Slack, PagerDuty and
Spotify constructs (tests/specs/*-like.*), through the server with the real upstream client
(``httpx.MockTransport`` records what would go on the wire)."""

from __future__ import annotations

import json
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from codemode import load_spec
from codemode._render import signature
from codemode._sandbox import LocalSandbox
from codemode._server import CodemodeServer
from codemode._settings import ParamSettings, ServerSettings
from codemode._upstream import HttpxUpstream, UpstreamSettings

SPECS = Path(__file__).resolve().parent / "specs"
ROOT = Path(__file__).resolve().parents[1]


class Wire:
    """A recording upstream transport: every request as sent, answered by ``answer``."""

    def __init__(self, answer: Any = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = {"ok": True} if answer is None else answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return httpx.Response(200, json=self.answer)

    def form(self, i: int = -1) -> list[tuple[str, str]]:
        return parse_qsl(self.requests[i].content.decode(), keep_blank_values=True)

    def parts(self, i: int = -1) -> list[tuple[str, str | None, str, bytes]]:
        request = self.requests[i]
        head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
        message = BytesParser().parsebytes(head + request.content)
        return [
            (p.get_param("name", header="content-disposition"), p.get_filename(), p.get_content_type(),
             p.get_payload(decode=True))
            for p in message.get_payload()
        ]  # fmt: skip


def serve(name: str, wire: Wire, env: dict[str, str] | None = None, **settings: Any) -> CodemodeServer:
    spec = load_spec(str(SPECS / name), use_cache=False)
    server_settings = ServerSettings(**settings)
    upstream = HttpxUpstream(server_settings.upstream, transport=httpx.MockTransport(wire))
    server = CodemodeServer(spec, server_settings, sandbox=LocalSandbox(), env=env or {})
    server._upstream = upstream  # the real client over a recording transport
    return server


async def run(server: CodemodeServer, code: str, **kw: Any) -> dict[str, Any]:
    if server._upstream is not None:
        creds = server.credentials
        server._upstream._credentials = creds  # type: ignore[attr-defined]
    async with server._lifespan(server.mcp):
        result = await server.execute(code, **kw)
    text = result.content[0].text  # type: ignore[union-attr]
    out: dict[str, Any] = json.loads(text)
    out["is_error"] = result.is_error
    return out


# -- Stripe: form bodies follow requestBody.content[*].encoding ----------------------------------


async def test_stripe_form_fields_use_their_deep_object_encoding() -> None:
    wire = Wire()
    server = serve("stripe-like.yaml", wire)
    out = await run(
        server,
        "api.refunds.post(charge='ch_1', metadata={'order': 'A-1'}, expand=['charge'])\n"
        "api.checkout.post_sessions(mode='payment', line_items=[{'price': 'p_1', 'quantity': 2},"
        " {'price': 'p_2', 'quantity': 1}], payment_method_types=['card'])",
    )
    assert not out["is_error"], out
    assert wire.requests[0].headers["content-type"] == "application/x-www-form-urlencoded"
    assert wire.form(0) == [("charge", "ch_1"), ("metadata[order]", "A-1"), ("expand[0]", "charge")]
    assert wire.form(1) == [
        ("mode", "payment"),
        ("line_items[0][price]", "p_1"), ("line_items[0][quantity]", "2"),
        ("line_items[1][price]", "p_2"), ("line_items[1][quantity]", "1"),
        ("payment_method_types[0]", "card"),
    ]  # fmt: skip


async def test_stripe_multipart_fields_use_their_encoding_and_files_stay_files() -> None:
    wire = Wire()
    server = serve("stripe-like.yaml", wire)
    out = await run(
        server,
        "api.files.post(purpose='dispute_evidence', file={'filename': 'e.pdf', 'content_base64': 'JVBERg==',"
        " 'content_type': 'application/pdf'}, file_link_data={'create': True, 'metadata': {'k': 'v'}})",
    )
    assert not out["is_error"], out
    assert wire.parts(0) == [
        ("purpose", None, "text/plain", b"dispute_evidence"),
        ("file", "e.pdf", "application/pdf", b"%PDF"),
        ("file_link_data[create]", None, "text/plain", b"true"),
        ("file_link_data[metadata][k]", None, "text/plain", b"v"),
    ]


def test_stripe_signatures_are_python_and_summaries_are_text() -> None:
    spec = load_spec(str(SPECS / "stripe-like.yaml"), use_cache=False)
    refund = spec.operation("refunds.post")
    assert refund is not None and refund.summary == "Create a refund."
    assert refund.description.startswith("When you create a new refund") and "<p>" not in refund.description
    files = spec.operation("files.post")
    assert files is not None and "multipart/form-data" in files.summary and "<code>" not in files.summary


# -- Slack: credential parameters are filled host-side -------------------------------------------


async def test_slack_token_parameters_are_hidden_and_the_servers_credential_stands_in() -> None:
    wire = Wire({"ok": True, "channel": "C1", "ts": "1.0"})
    server = serve(
        "slack-like.json", wire, env={"CODEMODE_SLACK_AUTH": "xoxb-secret-token"},
        params=ParamSettings(credentials=("token",)),
    )  # fmt: skip
    for key in ("chat.post_message", "conversations.list", "files_comments.delete"):
        op = server.spec.operation(key)
        assert op is not None and "token" not in signature(op, max_optional=None), key
    out = await run(
        server,
        "r = api.chat.post_message(channel='C1', text='hi')\n"
        "api.conversations.list(types=['public_channel', 'private_channel'])\n"
        "api.files_comments.delete(file='F1', id='c1')\nresult = r",
    )
    assert not out["is_error"], out
    assert out["result"]["ok"] is True
    post, listing, _ = wire.requests
    assert post.headers["authorization"] == "Bearer xoxb-secret-token" and "token" not in post.headers
    assert ("channel", "C1") in wire.form(0) and not any(k == "token" for k, _ in wire.form(0))
    assert listing.url.params.get_list("types") == ["public_channel,private_channel"]  # collectionFormat csv
    assert "token" not in listing.url.params and listing.headers["authorization"].startswith("Bearer ")
    assert wire.form(2) == [("file", "F1"), ("id", "c1")]
    refused = await run(
        server, "try:\n    api.chat.post_message(channel='C1', token='mine')\nexcept PermissionError as e:\n"
        "    result = str(e)",
    )  # fmt: skip
    assert "'token' is filled in by the server (a credential)" in refused["result"]
    assert len(wire.requests) == 3


async def test_api_key_parameters_are_filled_from_their_scheme() -> None:
    """Petstore's deletePet declares the `api_key` header that its apiKey scheme names."""
    wire = Wire()
    spec = load_spec(str(ROOT / "specs" / "petstore3-openapi.yaml"))
    assert "api_key" not in signature(spec.operation("pet.delete"), max_optional=None)  # type: ignore[arg-type]
    server = CodemodeServer(spec, ServerSettings(), sandbox=LocalSandbox(), env={"CODEMODE_API_KEY": "k-123456"})
    server._upstream = HttpxUpstream(UpstreamSettings(), transport=httpx.MockTransport(wire))
    out = await run(server, "api.pet.delete(3)")
    assert not out["is_error"], out
    assert wire.requests[0].headers["api_key"] == "k-123456"


# -- PagerDuty: boilerplate headers are filled from the spec -------------------------------------


async def test_pagerduty_accept_and_content_type_are_filled_and_hidden() -> None:
    wire = Wire({"incidents": [], "more": False})
    server = serve("pagerduty-like.yaml", wire, env={"CODEMODE_API_KEY": "Token token=abc"})
    listing = server.spec.operation("incidents.list")
    assert listing is not None
    text = signature(listing, max_optional=None)
    assert "Accept" not in text and "content_type" not in text.lower() and "total: bool = False" in text
    create = signature(server.spec.operation("incidents.create_incident"), max_optional=None)  # type: ignore[arg-type]
    assert "From: str" in create and "Accept" not in create
    out = await run(
        server,
        "api.incidents.list(statuses=['triggered', 'acknowledged'], total=True)\n"
        "api.incidents.create_incident(From='a@example.com', incident={'type': 'incident', 'title': 'Down'})",
    )
    assert not out["is_error"], out
    get, post = wire.requests
    assert get.headers["accept"] == "application/vnd.pagerduty+json;version=2"
    assert get.headers["content-type"] == "application/json" and get.headers["authorization"] == "Token token=abc"
    assert get.url.params.get_list("statuses[]") == ["triggered", "acknowledged"]
    assert post.headers["accept"] == "application/vnd.pagerduty+json;version=2" and post.headers["from"]
    assert json.loads(post.content) == {"incident": {"type": "incident", "title": "Down"}}


async def test_a_servers_values_override_the_specs_default_headers() -> None:
    wire = Wire({"incidents": []})
    server = serve("pagerduty-like.yaml", wire, params=ParamSettings(values={"Accept": "application/json"}))
    await run(server, "api.incidents.list()")
    assert wire.requests[0].headers["accept"] == "application/json"


# -- Spotify: dry-run stand-ins fill every property ----------------------------------------------


async def test_spotify_dry_run_stand_ins_have_every_field_realistic_code_reads() -> None:
    server = serve("spotify-like.yaml", Wire())
    code = (
        "album = api.albums.get_an_album('4aawyAB9vmqN3uQ7FjRGTy')\n"
        "result = {'uri': album['uri'], 'label': album['label'], 'artist': album['artists'][0]['name'],\n"
        "          'first_track': album['tracks']['items'][0]['uri'], 'image': album['images'][0]['url'],\n"
        "          'link': album['external_urls']['spotify']}"
    )
    out = await run(server, code, dry_run=True)
    assert not out["is_error"], out
    assert out["result"]["uri"] == "spotify:album:2up3OPMp9Tb4dAKM2erWXQ"  # the spec's example
    assert out["result"]["link"].startswith("https://open.spotify.example.com/")


# -- httpbin: a schema type that is not JSON Schema ----------------------------------------------


async def test_unknown_schema_types_are_warnings_and_calls_work() -> None:
    spec = load_spec(str(ROOT / "specs" / "httpbin-0.10.4-served-spec.json"), use_cache=False)
    warned = [w for w in spec.warnings if "unknown type 'int'" in w.message]
    assert len(warned) >= 18 and all(w.pointer.startswith("/paths/") for w in warned)
    wire = Wire()
    server = CodemodeServer(spec, ServerSettings(), sandbox=LocalSandbox(), env={})
    server._upstream = HttpxUpstream(
        UpstreamSettings(base_url="http://127.0.0.1:9"), transport=httpx.MockTransport(wire)
    )
    out = await run(server, "api.dynamic_data.get_delay(3)\nresult = api.dynamic_data.get_bytes(16)")
    assert not out["is_error"], out
    assert [r.url.path for r in wire.requests] == ["/delay/3", "/bytes/16"]
    dry = await run(server, "result = api.dynamic_data.get_delay(3)", dry_run=True)
    assert not dry["is_error"], dry


@pytest.mark.parametrize("name", sorted(p.name for p in SPECS.iterdir()))
def test_every_signature_of_the_shape_specs_is_python(name: str) -> None:
    import ast
    import re

    spec = load_spec(str(SPECS / name), use_cache=False)
    for op in spec.operations:
        text = signature(op, max_optional=None)
        inner = re.sub(r"\{[^{}]*\}", "dict", text[text.index("(") + 1 : text.rindex(") ->")])
        ast.parse(f"def f({inner}): pass")


EDGE_SPEC = """
openapi: 3.0.3
info: {title: Edge, version: "1"}
servers: [{url: "https://edge.example.com"}]
components:
  schemas:
    FunctionCall:
      type: object
      required: [type, function]
      properties:
        type: {type: string, enum: [function]}
        function: {type: object, properties: {name: {type: string}}}
    CustomCall:
      type: object
      required: [type, custom]
      properties:
        type: {type: string, enum: [custom]}
        custom: {type: string}
    Event:
      type: object
      properties:
        at: {type: string, format: date-time, example: "2026-01-01"}
paths:
  /calls:
    post:
      operationId: makeCall
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                call:
                  oneOf: [{$ref: "#/components/schemas/FunctionCall"}, {$ref: "#/components/schemas/CustomCall"}]
                  discriminator: {propertyName: type}
      responses:
        "200": {description: ok, content: {application/json: {schema: {$ref: "#/components/schemas/Event"}}}}
  /search:
    get:
      operationId: search
      parameters:
        - name: filter
          in: query
          content: {application/json: {schema: {type: object, properties: {tag: {type: string}}}}}
      responses: {"204": {description: ok}}
  /menu:
    post:
      operationId: addItem
      requestBody:
        content:
          multipart/form-data:
            schema:
              oneOf:
                - {type: object, properties: {name: {type: string}, photo: {type: string, format: binary}}}
                - {type: object, properties: {title: {type: string}}}
      responses: {"204": {description: ok}}
"""


async def test_discriminators_without_mapping_content_params_and_whole_form_bodies(tmp_path: Path) -> None:
    """Found by the fidelity suite: OpenAI-style discriminators (values that are not schema names) made valid
    calls fail our own validation; `content` parameters were not JSON; a multipart body given whole went out
    as JSON; a date example that is not a date-time was used as the stand-in."""
    src = tmp_path / "edge.yaml"
    src.write_text(EDGE_SPEC)
    wire = Wire()
    spec = load_spec(str(src), use_cache=False)
    server = CodemodeServer(spec, ServerSettings(), sandbox=LocalSandbox(), env={})
    server._upstream = HttpxUpstream(UpstreamSettings(), transport=httpx.MockTransport(wire))
    out = await run(
        server,
        "api.calls.make_call(call={'type': 'function', 'function': {'name': 'f'}})\n"
        "api.search.search(filter={'tag': 'x'})\n"
        "api.menu.add_item(body={'name': 'tea', 'photo': {'filename': 'p.png', 'content_base64': 'aGk='}})",
    )
    assert not out["is_error"], out
    call, search, _ = wire.requests
    assert json.loads(call.content) == {"call": {"type": "function", "function": {"name": "f"}}}
    assert search.url.params["filter"] == '{"tag":"x"}'
    assert wire.parts(2) == [
        ("name", None, "text/plain", b"tea"),
        ("photo", "p.png", "application/octet-stream", b"hi"),
    ]
    refused = await run(server, "api.calls.make_call(call={'type': 'custom', 'function': {}})")
    assert refused["is_error"] and "TypeError" in refused["error"]
    dry = await run(server, "result = api.calls.make_call(call={'type': 'custom', 'custom': 'c'})", dry_run=True)
    assert dry["result"]["at"] == "2026-01-01T00:00:00Z"  # the example is a date, not a date-time


READ_ONLY_SPEC = """
openapi: 3.0.3
info: {title: RO, version: "1"}
servers: [{url: "https://ro.example.com"}]
components:
  schemas:
    identifier: {type: string, readOnly: true, maxLength: 32}
    created: {allOf: [{$ref: "#/components/schemas/stamp"}]}
    stamp: {type: string, readOnly: true}
paths:
  /rules/{rule_id}:
    patch:
      operationId: updatePriority
      parameters: [{name: rule_id, in: path, required: true, schema: {$ref: "#/components/schemas/identifier"}}]
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [id]
              properties:
                id: {$ref: "#/components/schemas/identifier"}
                created_on: {$ref: "#/components/schemas/created"}
                priority: {type: integer}
      responses: {"200": {description: ok}}
"""


async def test_read_only_body_fields_and_required_empty_bodies(tmp_path: Path) -> None:
    """readOnly fields (through refs and allOf) are not offered, except a required one (Cloudflare needs the id it
    marks readOnly), which is optional; a required body with no field given is still sent."""
    src = tmp_path / "ro.yaml"
    src.write_text(READ_ONLY_SPEC)
    spec = load_spec(str(src), use_cache=False)
    op = spec.operation("rules.update_priority")
    assert op is not None
    text = signature(op, max_optional=None)
    assert "created_on" not in text and "id: str | None = None" in text and "priority" in text
    wire = Wire()
    server = CodemodeServer(spec, ServerSettings(), sandbox=LocalSandbox(), env={})
    server._upstream = HttpxUpstream(UpstreamSettings(), transport=httpx.MockTransport(wire))
    out = await run(server, "api.rules.update_priority('r1')\napi.rules.update_priority('r1', id='r1', priority=2)")
    assert not out["is_error"], out
    assert json.loads(wire.requests[0].content) == {} and wire.requests[0].headers["content-type"] == "application/json"
    assert json.loads(wire.requests[1].content) == {"id": "r1", "priority": 2}


def test_hostile_spec_inputs_stay_cheap_and_contained() -> None:
    """Inputs no spec author meant: a 120-word operationId, a pattern whose sample would be huge."""
    import time

    from codemode._naming import NameRequest, assign_names
    from codemode._standin import pattern_sample

    words = "Get" + "".join(f"Word{i}x" for i in range(120))
    started = time.perf_counter()
    names = assign_names([NameRequest("get", f"/a/{i}", f"{words}{i}", ["t"]) for i in range(20)])
    assert time.perf_counter() - started < 5
    assert len({f"{g}.{n}" for g, n in names}) == 20 and all(len(f"{g}.{n}") <= 64 for g, n in names)
    started = time.perf_counter()
    assert pattern_sample("^((a{1000}){1000})$") is None
    assert pattern_sample("^(a+)+$") == "a"
    assert time.perf_counter() - started < 1


async def test_deep_object_keys_cannot_change_the_nesting_and_data_is_not_a_file(tmp_path: Path) -> None:
    wire = Wire()
    server = serve("stripe-like.yaml", wire)
    out = await run(server, "api.refunds.post(charge='c', metadata={'x][admin': 'true'})")
    assert out["is_error"] and "contains '[' or ']'" in out["error"] and wire.requests == []
    src = tmp_path / "edge.yaml"
    src.write_text(EDGE_SPEC)
    server = CodemodeServer(load_spec(str(src), use_cache=False), ServerSettings(), sandbox=LocalSandbox(), env={})
    server._upstream = HttpxUpstream(UpstreamSettings(), transport=httpx.MockTransport(wire))
    out = await run(server, "api.menu.add_item(body={'name': {'content': 'x', 'lang': 'en'}})")
    assert not out["is_error"], out
    assert wire.parts(0) == [("name", None, "application/json", b'{"content":"x","lang":"en"}')]


MERGE_SPEC = """
openapi: 3.0.3
info: {title: Merge, version: "1"}
servers: [{url: "https://m.example.com"}]
components:
  schemas:
    origin: {type: object, properties: {host: {type: string}}}
    origin-with-secrets:
      allOf: [{$ref: "#/components/schemas/origin"}]
      properties: {password: {type: string}}
      required: [password]
      type: object
    config: {type: object, properties: {origin: {$ref: "#/components/schemas/origin"}, name: {type: string}}}
paths:
  /configs:
    post:
      operationId: createConfig
      requestBody:
        content:
          application/json:
            schema:
              allOf: [{$ref: "#/components/schemas/config"}]
              properties: {origin: {$ref: "#/components/schemas/origin-with-secrets"}}
              required: [name, origin]
              type: object
      responses: {"200": {description: ok}}
  /acls:
    post:
      operationId: createAcl
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                subnets:
                  type: array
                  items:
                    oneOf:
                      - {type: string, format: ipv4, example: 192.0.2.1}
                      - {type: string, example: 192.0.2.0/24, description: CIDR}
      responses: {"200": {description: ok}}
  /scripts:
    put:
      operationId: putScript
      requestBody:
        content:
          multipart/form-data:
            schema:
              type: object
              properties:
                modules: {type: array, items: {type: string, format: binary}}
      responses: {"200": {description: ok}}
"""


async def test_fields_defined_twice_must_satisfy_both_and_formats_decide_one_of(tmp_path: Path) -> None:
    """Cloudflare's hyperdrive body defines `origin` in the body and in an allOf part (the body's needs a
    password); its ACL subnets are oneOf [IPv4, CIDR], decidable only with formats."""
    src = tmp_path / "merge.yaml"
    src.write_text(MERGE_SPEC)
    wire = Wire()
    server = CodemodeServer(load_spec(str(src), use_cache=False), ServerSettings(), sandbox=LocalSandbox(), env={})
    server._upstream = HttpxUpstream(UpstreamSettings(), transport=httpx.MockTransport(wire))
    missing = await run(server, "api.configs.create_config(name='n', origin={'host': 'db'})")
    assert missing["is_error"] and "'password' is a required property" in missing["error"]
    out = await run(
        server,
        "api.configs.create_config(name='n', origin={'host': 'db', 'password': 'p'})\n"
        "api.acls.create_acl(subnets=['192.0.2.0/24'])",  # not an ipv4: only the CIDR branch matches
    )
    assert not out["is_error"], out
    assert json.loads(wire.requests[1].content) == {"subnets": ["192.0.2.0/24"]}
    # '192.0.2.1' is valid under both branches: the spec's own oneOf admits no value, so the upstream judges it
    both = await run(server, "api.acls.create_acl(subnets=['192.0.2.1'])")
    assert not both["is_error"], both
    assert json.loads(wire.requests[2].content) == {"subnets": ["192.0.2.1"]}
    wrong = await run(server, "api.acls.create_acl(subnets=[5])")
    assert wrong["is_error"] and "is not valid under any of the given schemas" in wrong["error"]
    files = "[{'filename': 'a.js', 'content': 'x'}, {'filename': 'b.js', 'content': 'y'}]"
    out = await run(server, f"api.scripts.put_script(modules={files})")  # a list of files for an array of binary
    assert not out["is_error"], out
    assert [(n, f) for n, f, _, _ in wire.parts(3)] == [("modules", "a.js"), ("modules", "b.js")]
