"""The access seam: a host-identified caller narrows what execute may call, brings its own
upstream credentials (used instead of the server's), is scrubbed, and is named in audit events."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from codemode import Caller, Operation, load_spec
from codemode._credentials import Credentials
from codemode._execute import Executor
from codemode._format import format_execute
from codemode._sandbox import LocalSandbox
from codemode._server import CodemodeServer
from codemode._settings import ExecuteSettings, ServerSettings
from codemode._upstream import AuditEvent, HttpxUpstream, UpstreamRequest, UpstreamSettings

PETSTORE = Path(__file__).resolve().parents[1] / "specs" / "petstore3-openapi.yaml"


@pytest.fixture(scope="module")
def spec() -> Any:
    return load_spec(str(PETSTORE))


def reads_only(op: Operation) -> str | None:
    return None if op.read_only else "needs scope petstore:write"


class UserToken:
    """A per-user credential source: one bearer token, known as a secret."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def apply(self, request: UpstreamRequest) -> UpstreamRequest:
        return dataclasses.replace(request, headers={**request.headers, "Authorization": f"Bearer {self.token}"})

    def invalidate_tokens(self, request: UpstreamRequest) -> bool:
        return False

    def secrets(self) -> set[str]:
        return {self.token, f"Bearer {self.token}"}

    def reserved(self) -> frozenset[tuple[str, str]]:
        return frozenset({("header", "authorization")})


class LearnedToken(UserToken):
    """Knows its secret only once it has sent it (as the portal's per-user source does)."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.sent = False

    async def apply(self, request: UpstreamRequest) -> UpstreamRequest:
        self.sent = True
        return await super().apply(request)

    def secrets(self) -> set[str]:
        return super().secrets() if self.sent else set()


def echo_transport(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": 1, "name": "x", "echo": dict(request.headers)})

    return httpx.MockTransport(handler)


def executor(spec: Any, seen: list[httpx.Request], events: list[AuditEvent], env: dict[str, str]) -> Executor:
    creds = Credentials.from_env(spec.security_schemes, env)
    upstream = HttpxUpstream(
        UpstreamSettings(), credentials=creds, transport=echo_transport(seen), audit_hooks=(events.append,)
    )
    return Executor(spec, LocalSandbox(), upstream, ExecuteSettings(), reserved=creds.reserved())  # as the server does


async def run(ex: Executor, code: str, caller: Caller | None) -> dict[str, Any]:
    report = await ex.execute(code, caller=caller)
    text, is_error = format_execute(report, max_chars=40_000)
    return {**json.loads(text), "is_error": is_error}


async def test_a_denied_call_is_a_catchable_permission_error_and_never_sent(spec: Any) -> None:
    seen: list[httpx.Request] = []
    ex = executor(spec, seen, [], {})
    caller = Caller(subject="alice", client_id="c1", denial=reads_only)
    code = (
        "try:\n    api.pet.add(name='Rex', photoUrls=[])\nexcept PermissionError as e:\n    result = str(e)\n"
        "api.pet.get_by_id(1)\n"
    )
    out = await run(ex, code, caller)
    assert not out["is_error"], out
    assert "needs scope petstore:write" in out["result"]
    assert [r.method for r in seen] == ["GET"]  # the POST never left the host


async def test_without_a_caller_the_server_policy_alone_applies(spec: Any) -> None:
    seen: list[httpx.Request] = []
    out = await run(executor(spec, seen, [], {}), "api.pet.add(name='Rex', photoUrls=[])", None)
    assert not out["is_error"] and [r.method for r in seen] == ["POST"]


async def test_caller_credentials_replace_the_shared_ones_and_are_scrubbed(spec: Any) -> None:
    seen: list[httpx.Request] = []
    events: list[AuditEvent] = []
    ex = executor(spec, seen, events, {"CODEMODE_API_KEY": "shared-team-key-123"})
    alice = Caller(subject="alice", client_id="claude", credentials=UserToken("alice-own-token-456"))
    out = await run(ex, "result = api.pet.get_by_id(1)['echo']", alice)
    sent = seen[-1].headers
    assert sent["authorization"] == "Bearer alice-own-token-456"
    assert "api_key" not in sent  # the shared credential is not added on top
    assert "alice-own-token-456" not in json.dumps(out)  # the caller's secret never reaches the guest
    assert events[-1].subject == "alice" and events[-1].client_id == "claude"
    # Without a caller, the shared key is used (and scrubbed as before).
    out = await run(ex, "result = api.pet.get_by_id(1)['echo']", None)
    assert seen[-1].headers["api_key"] == "shared-team-key-123" and "authorization" not in seen[-1].headers
    assert "shared-team-key-123" not in json.dumps(out) and events[-1].subject is None


async def test_two_callers_each_get_their_own_identity(spec: Any) -> None:
    seen: list[httpx.Request] = []
    ex = executor(spec, seen, [], {})
    for user in ("alice", "bob"):
        await run(ex, "api.pet.get_by_id(1)", Caller(subject=user, credentials=UserToken(f"{user}-token-xyz")))
    assert [r.headers["authorization"] for r in seen] == ["Bearer alice-token-xyz", "Bearer bob-token-xyz"]


async def test_search_marks_what_the_caller_may_not_call(spec: Any) -> None:
    current: list[Caller | None] = [Caller(subject="alice", denial=reads_only)]
    server = CodemodeServer(spec, ServerSettings(), sandbox=LocalSandbox(), env={}, access=lambda: current[0])
    result = await server.search("add a new pet to the store")
    text = result.content[0].text  # type: ignore[union-attr]
    post = next(line for line in text.splitlines() if line.startswith("POST /pet"))
    assert "not callable: needs scope petstore:write" in post
    assert all("not callable" not in line for line in text.splitlines() if line.startswith("GET "))
    detail = (await server.search(detail="POST /pet")).content[0].text  # type: ignore[union-attr]
    assert detail.startswith("[not callable with your access: needs scope petstore:write]")
    current[0] = None
    text = (await server.search("add a new pet to the store")).content[0].text  # type: ignore[union-attr]
    assert "not callable" not in text


async def test_the_server_passes_the_caller_of_each_request_to_execute(spec: Any) -> None:
    seen: list[httpx.Request] = []
    upstream = HttpxUpstream(UpstreamSettings(), transport=echo_transport(seen))
    callers = iter([Caller(subject="alice", denial=reads_only), Caller(subject="bob")])
    server = CodemodeServer(
        spec, ServerSettings(), sandbox=LocalSandbox(), upstream=upstream, env={}, access=lambda: next(callers)
    )
    async with server._lifespan(server.mcp):
        refused = await server.execute("api.pet.add(name='Rex', photoUrls=[])")
        allowed = await server.execute("api.pet.add(name='Rex', photoUrls=[])")
    assert refused.is_error and "PermissionError" in refused.content[0].text  # type: ignore[union-attr]
    assert not allowed.is_error and [r.method for r in seen] == ["POST"]


async def test_the_answer_is_scrubbed_with_secrets_the_caller_learned_during_the_run(spec: Any) -> None:
    ex = executor(spec, [], [], {})
    secret = "user-secret-0123456789"
    # the model pasted the user's key into its code; the source learns it only when it first sends
    code = f"api.pet.get_by_id(1)\nprint({secret!r})\nresult = {{'k': {secret!r}}}"
    out = await run(ex, code, Caller(subject="alice", credentials=LearnedToken(secret)))
    assert not out["is_error"], out
    assert secret not in json.dumps(out), out


async def test_a_guest_header_named_like_the_callers_credential_is_refused_never_sent() -> None:
    httpbin = load_spec(str(PETSTORE.parent / "httpbin-0.10.4-served-spec.json"))
    seen: list[httpx.Request] = []
    ex = executor(httpbin, seen, [], {})  # no shared credentials: only the caller's reserve the name
    code = (
        "try:\n    api.auth.list_bearer(Authorization='Bearer attacker')\n"
        "except PermissionError as e:\n    result = str(e)"
    )
    out = await run(ex, code, Caller(subject="alice", credentials=UserToken("user-token-0123456789")))
    assert "Authorization" in out["result"], out
    assert not seen, [dict(r.headers) for r in seen]


async def test_a_cookie_header_parameter_cannot_replace_a_cookie_credential(tmp_path: Path) -> None:
    """A spec may declare a header parameter named Cookie; the guest must not use it to drop the
    operator's (or the caller's) credential cookie and send its own."""
    spec_file = tmp_path / "cookie.json"
    spec_file.write_text(json.dumps({
        "openapi": "3.0.0", "info": {"title": "Cookie", "version": "1"}, "servers": [{"url": "https://up.example"}],
        "components": {"securitySchemes": {"sid": {"type": "apiKey", "in": "cookie", "name": "sid"}}},
        "security": [{"sid": []}],
        "paths": {"/echo": {"get": {"operationId": "echo", "tags": ["echo"],
                                     "parameters": [{"name": "Cookie", "in": "header", "schema": {"type": "string"}}],
                                     "responses": {"200": {"description": "ok"}}}}},
    }))  # fmt: skip
    spec = load_spec(str(spec_file), cache_dir=tmp_path / "cache")
    seen: list[httpx.Request] = []
    ex = executor(spec, seen, [], {"CODEMODE_SID": "operator-secret-value-abcdef"})
    code = (
        "api.echo.echo()\n"
        "try:\n    api.echo.echo(Cookie='sid=guest-chosen-value-123; other=1')\n"
        "except PermissionError as e:\n    result = str(e)"
    )
    out = await run(ex, code, None)
    assert "set by the server" in out.get("result", ""), out
    assert [r.headers.get("cookie") for r in seen] == ["sid=operator-secret-value-abcdef"]
