"""``codemode connect``'s parts, each on its own: the token file (place, permissions, atomic
writes, broken files, symbolic links, the inter-process lock), the loopback redirect listener
(only the awaited answer counts), the per-message HTTP headers, the HTTP client's error answers and
size cap, and the settings."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from codemode_portal._connect import (
    AuthorizationFailed,
    ConnectError,
    ConnectSettings,
    Headers,
    LoopbackCallback,
    StoredState,
    TokenFile,
    config_dir,
    forward,
    token_path,
)
from codemode_portal._connect._http import BridgeHttpClient, ResponseTooLarge
from codemode_portal._connect._tokens import FORMAT
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCNotification, JSONRPCRequest, JSONRPCResponse
from pydantic import ValidationError
from upstreams import free_port

from codemode._cli import main as cli

URL = "https://portal.example.com/mcp/github"
posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")


# the token file ------------------------------------------------------------------------------


def test_the_config_folder_is_where_each_os_keeps_it(tmp_path: Path) -> None:
    home = {"HOME": "/home/ann"}
    assert config_dir("linux", home) == Path("/home/ann/.config/codemode")
    assert config_dir("linux", {**home, "XDG_CONFIG_HOME": "/xdg"}) == Path("/xdg/codemode")
    assert config_dir("linux", {**home, "XDG_CONFIG_HOME": "relative"}) == Path("/home/ann/.config/codemode")
    assert config_dir("darwin", home) == Path("/home/ann/Library/Application Support/codemode")
    assert config_dir("win32", {"USERPROFILE": "C:/Users/ann", "APPDATA": "C:/Users/ann/AppData/Roaming"}) == Path(
        "C:/Users/ann/AppData/Roaming/codemode"
    )
    assert config_dir("linux", {**home, "CODEMODE_CONFIG_DIR": str(tmp_path)}) == tmp_path


def test_one_file_per_server_url(tmp_path: Path) -> None:
    a = token_path(URL, tmp_path)
    assert a == token_path(URL, tmp_path)
    assert a != token_path(URL.replace("github", "gitlab"), tmp_path)
    assert a.parent == tmp_path / "connect" and a.name.startswith("portal.example.com-")


def _state() -> StoredState:
    return StoredState(
        client=OAuthClientInformationFull(client_id="cmp_client_x", redirect_uris=["http://127.0.0.1:5000/callback"]),
        tokens=OAuthToken(access_token="cmp_at_secret", refresh_token="cmp_rt_secret", expires_in=600),
        expires_at=1_900_000_000.0,
    )


@posix_only
def test_saved_private_and_read_back(tmp_path: Path) -> None:
    (tmp_path / "connect").mkdir(mode=0o755)
    os.chmod(tmp_path / "connect", 0o755)
    file = TokenFile(URL, token_path(URL, tmp_path))
    assert file.load() == StoredState()
    file.save(_state())
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(file.path.parent.stat().st_mode) == 0o700  # tightened
    loaded = file.load()
    assert loaded.tokens is not None and loaded.tokens.refresh_token == "cmp_rt_secret"
    assert loaded.client is not None and loaded.client.client_id == "cmp_client_x"
    assert loaded.expires_at == 1_900_000_000.0
    assert [p.name for p in file.path.parent.iterdir()] == [file.path.name]  # no temporary file left


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", json.dumps({"format": "other/9"}).encode(),
     json.dumps({"format": FORMAT, "server_url": "https://elsewhere/mcp/x"}).encode(),
     json.dumps({"format": FORMAT, "server_url": URL, "tokens": {"nope": 1}}).encode(), b" " * 300_000],
    ids=["not-json", "not-object", "other-format", "other-server", "bad-tokens", "oversized"],
)  # fmt: skip
def test_a_broken_file_is_moved_aside_and_the_bridge_signs_in_again(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    file = TokenFile(URL, token_path(URL, tmp_path))
    file.path.parent.mkdir(parents=True, mode=0o700)
    file.path.write_bytes(content)
    os.chmod(file.path, 0o600)
    with caplog.at_level(logging.WARNING, logger="codemode.connect"):
        assert file.load() == StoredState()
    assert not file.path.exists()
    (aside,) = file.path.parent.glob("*.corrupt-*")
    assert aside.read_bytes() == content
    assert "could not be read" in caplog.text and "Signing in again" in caplog.text


@posix_only
def test_a_file_others_can_read_is_tightened_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    file = TokenFile(URL, token_path(URL, tmp_path))
    file.save(_state())
    os.chmod(file.path, 0o644)
    with caplog.at_level(logging.WARNING, logger="codemode.connect"):
        assert file.load().tokens is not None
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
    assert "readable by other users" in caplog.text and "--logout" in caplog.text
    assert "cmp_rt_secret" not in caplog.text


@posix_only
def test_a_symbolic_link_is_not_followed(tmp_path: Path) -> None:
    file = TokenFile(URL, token_path(URL, tmp_path))
    file.path.parent.mkdir(parents=True, mode=0o700)
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    file.path.symlink_to(target)
    with pytest.raises(ConnectError, match="symbolic link"):
        file.load()
    file.save(_state())  # a write replaces the link itself (rename), never writes through it
    assert target.read_text() == "{}"
    assert not file.path.is_symlink() and stat.S_IMODE(file.path.stat().st_mode) == 0o600


async def test_the_lock_is_held_by_one_holder_at_a_time(tmp_path: Path) -> None:
    file = TokenFile(URL, token_path(URL, tmp_path))
    first, second = file.lock(), file.lock()
    assert await first.acquire(1)
    assert not await second.acquire(0.3)  # another descriptor (as another process) waits, then gives up
    first.release()
    assert await second.acquire(1)
    second.release()


# the loopback listener -------------------------------------------------------------------------


async def _get(port: int, raw: bytes) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.decode("latin-1")


async def test_the_listener_takes_only_the_awaited_answer() -> None:
    cb = LoopbackCallback(max_request_bytes=4096, read_timeout=2)
    await cb.open(0)
    try:
        assert cb.redirect_uri == f"http://127.0.0.1:{cb.port}/callback"
        cb.expect("the-state")
        waiting = asyncio.create_task(cb.wait(10))
        for raw, status in [
            (b"GET /callback?code=stolen&state=guess HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /callback?code=stolen HTTP/1.1\r\n\r\n", 400),
            (b"GET /other?code=c&state=the-state HTTP/1.1\r\n\r\n", 404),
            (b"POST /callback?code=c&state=the-state HTTP/1.1\r\n\r\n", 405),
            (b"GET /callback?" + b"a" * 8000 + b" HTTP/1.1\r\n\r\n", 400),
            (b"garbage\r\n\r\n", 400),
        ]:
            assert (await _get(cb.port, raw))[0] == status, raw[:40]
        assert not waiting.done()
        answer = b"GET /callback?code=the-code&state=the-state&iss=https%3A%2F%2Fp HTTP/1.1\r\n\r\n"
        status, page = await _get(cb.port, answer)
        assert status == 200 and "You can close this tab" in page and "no-store" in page
        result = await waiting
        assert (result.code, result.state, result.iss) == ("the-code", "the-state", "https://p")
        assert (await _get(cb.port, b"GET /callback?code=again&state=the-state HTTP/1.1\r\n\r\n"))[0] == 400
    finally:
        await cb.aclose()


async def test_a_refusal_or_no_answer_is_a_clear_error() -> None:
    cb = LoopbackCallback()
    await cb.open(0)
    try:
        cb.expect("s1")
        waiting = asyncio.create_task(cb.wait(10))
        refusal = b"GET /callback?error=access_denied&error_description=no%0A%1B[31mway&state=s1 HTTP/1.1\r\n\r\n"
        await _get(cb.port, refusal)
        with pytest.raises(AuthorizationFailed, match="access_denied") as denied:
            await waiting
        assert denied.value.code == "connect.auth.denied" and "\x1b" not in denied.value.message
        cb.expect("s2")
        with pytest.raises(AuthorizationFailed, match="not completed within 1 s") as late:
            await cb.wait(1)
        assert late.value.code == "connect.auth.timeout"
    finally:
        await cb.aclose()


async def test_a_taken_port_is_an_os_error() -> None:
    first = LoopbackCallback()
    await first.open(0)
    try:
        with pytest.raises(OSError):
            await LoopbackCallback().open(first.port)
    finally:
        await first.aclose()


# per-message headers ---------------------------------------------------------------------------


def _request(id_: int, method: str, params: dict[str, object] | None = None) -> SessionMessage:
    return SessionMessage(JSONRPCRequest(jsonrpc="2.0", id=id_, method=method, params=params))


def test_headers_follow_the_negotiated_version() -> None:
    h = Headers()
    init = h.outgoing(_request(1, "initialize", {"protocolVersion": "2025-11-25"}))
    assert init.metadata is None
    h.incoming(SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=1, result={"protocolVersion": "2025-06-18"})))
    listed = h.outgoing(_request(2, "tools/list"))
    assert listed.metadata is not None and listed.metadata.headers == {"mcp-protocol-version": "2025-06-18"}
    note = h.outgoing(SessionMessage(JSONRPCNotification(jsonrpc="2.0", method="notifications/initialized")))
    assert note.metadata is not None and note.metadata.headers == {"mcp-protocol-version": "2025-06-18"}
    answer = SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=7, result={}))
    assert h.outgoing(answer) is answer


def test_headers_of_2026_requests_come_from_their_meta_and_the_listed_tools() -> None:
    h = Headers()
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
    h.outgoing(_request(1, "tools/list", {"_meta": meta}))
    schema = {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}
    h.incoming(SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=1, result={
        "tools": [{"name": "execute", "inputSchema": schema}, "junk", {"name": 3}]})))  # fmt: skip
    call = h.outgoing(_request(2, "tools/call", {"_meta": meta, "name": "execute",
                                                  "arguments": {"region": "eu-west", "code": "x"}}))  # fmt: skip
    assert call.metadata is not None and call.metadata.headers == {
        "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "execute",
        "Mcp-Param-Region": "eu-west",
    }  # fmt: skip
    odd = h.outgoing(_request(3, "tools/call", {"_meta": meta, "name": "naïve\n"}))
    assert odd.metadata is not None and odd.metadata.headers["mcp-name"].startswith("=?base64?")


def test_unanswered_requests_are_not_remembered_forever() -> None:
    h = Headers()
    for i in range(20_000):
        h.outgoing(_request(i, "tools/list"))
    assert len(h._pending) <= 10_000


# the HTTP client ------------------------------------------------------------------------------


def _client(handler: object, cap: int = 64 * 1024) -> BridgeHttpClient:
    return BridgeHttpClient(URL, max_response_bytes=cap, transport=httpx2.MockTransport(handler))  # type: ignore[arg-type]


def _rpc_error(response: httpx2.Response) -> dict[str, object]:
    body = json.loads(response.content)
    assert body["jsonrpc"] == "2.0" and body["id"] is None
    error: dict[str, object] = body["error"]
    return error


async def test_network_failures_become_json_rpc_errors() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused")

    async with _client(refuse) as http:
        r = await http.post(URL, json={})
    assert r.status_code == 502 and r.headers["content-type"] == "application/json"
    error = _rpc_error(r)
    assert "cannot reach https://portal.example.com" in str(error["message"])
    assert error["data"] == {"reason": "connect.unreachable"}


async def test_the_portals_final_refusals_are_explained() -> None:
    def portal(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("github"):
            challenge = 'Bearer error="insufficient_scope", error_description="This token lacks github:read.", ' \
                        'scope="github:read"'  # fmt: skip
            return httpx2.Response(403, headers={"www-authenticate": challenge}, json={"error": "insufficient_scope"})
        return httpx2.Response(401, headers={"www-authenticate": 'Bearer error="invalid_token"'})

    async with _client(portal) as http:
        forbidden = await http.post(URL, json={})
        elsewhere = await http.get("https://portal.example.com/other")
    error = _rpc_error(forbidden)
    assert forbidden.status_code == 403 and "It needs the scope github:read" in str(error["message"])
    assert error["data"] == {"reason": "connect.forbidden", "scope": "github:read"}
    assert elsewhere.status_code == 401 and elsewhere.headers["www-authenticate"]  # not the MCP URL: untouched


async def test_other_refusals_of_the_portal_are_said_in_words() -> None:
    def portal(request: httpx2.Request) -> httpx2.Response:
        if "mcp-session-id" in request.headers:
            return httpx2.Response(404, text="Not Found")
        if request.headers.get("x-case") == "rpc":  # the MCP server's own JSON-RPC error: untouched
            return httpx2.Response(400, json={"jsonrpc": "2.0", "id": 3, "error": {"code": -32602, "message": "bad"}})
        return httpx2.Response(503, headers={"retry-after": "5"}, json={
            "error": "temporarily_unavailable", "error_description": "The database is \x1b[31mdown."})  # fmt: skip

    async with _client(portal) as http:
        down = await http.post(URL, json={})
        gone = await http.post(URL, json={}, headers={"mcp-session-id": "s1"})
        rpc = await http.post(URL, json={}, headers={"x-case": "rpc"})
    error = _rpc_error(down)
    assert down.status_code == 503 and "answered 503 temporarily_unavailable" in str(error["message"])
    assert "try again in 5 s" in str(error["message"]) and "\x1b" not in str(error["message"])
    assert error["data"] == {"reason": "connect.portal", "http_status": 503, "error": "temporarily_unavailable"}
    assert "no longer knows this MCP session" in str(_rpc_error(gone)["message"])
    assert json.loads(rpc.content)["error"] == {"code": -32602, "message": "bad"}


async def test_responses_past_the_cap_are_refused() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 4096

    def big(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/declared":
            return httpx2.Response(200, content=b"x" * 200_000)  # with its Content-Length
        return httpx2.Response(200, content=chunks())  # chunked: counted while read

    async with _client(big, cap=64 * 1024) as http:
        declared = await http.get("https://portal.example.com/declared")
        assert declared.status_code == 502 and "larger than 65536 bytes" in str(_rpc_error(declared)["message"])
        async with http.stream("GET", "https://portal.example.com/streamed") as r:
            assert r.status_code == 200
            with pytest.raises(ResponseTooLarge):
                await r.aread()


# settings and the command ----------------------------------------------------------------------


def test_settings_refuse_what_would_leak_or_cannot_work() -> None:
    assert ConnectSettings(url=URL).url == URL
    assert ConnectSettings(url="http://127.0.0.1:8000/mcp/x").url.startswith("http://127.0.0.1")
    with pytest.raises(ValidationError, match="must be https://"):
        ConnectSettings(url="http://portal.example.com/mcp/github")
    with pytest.raises(ValidationError, match="user name, password"):
        ConnectSettings(url="https://ann:pw@portal.example.com/mcp/github")
    with pytest.raises(ValidationError, match="needs --callback-port"):
        ConnectSettings(url=URL, client_metadata_url="https://example.com/client.json")
    with pytest.raises(ValidationError, match="https:// URL with a path"):
        ConnectSettings(url=URL, client_metadata_url="https://example.com/", callback_port=40000)


def test_the_command_names_the_bad_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["connect", "http://portal.example.com/mcp/github"]) == 2
    assert "error [connect.usage]: url: must be https://" in capsys.readouterr().err
    assert cli(["connect", URL, "--client-metadata-url", "https://example.com/c.json"]) == 2
    assert "needs --callback-port" in capsys.readouterr().err
    assert cli(["connect", URL, "--callback-port", "80"]) == 2
    assert "--callback-port" in capsys.readouterr().err


def test_logout_without_a_stored_sign_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp/x"
    assert cli(["connect", url, "--logout", "--token-dir", str(tmp_path)]) == 0
    assert "no stored sign-in" in capsys.readouterr().out


def test_connect_is_a_command_of_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli(["connect", "--help"])
    out = capsys.readouterr().out
    assert "--client-metadata-url" in out and "--no-browser" in out and "--logout" in out
    assert sys.executable  # (the entry point itself is exercised by test_connect_bridge)


def test_login_to_a_portal_that_is_not_there_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp/x"
    assert cli(["connect", url, "--login", "--no-browser", "--token-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error [connect.login]: cannot reach http://127.0.0.1:"), err
    assert "Traceback" not in err


async def test_a_request_with_a_lone_surrogate_escape_is_forwarded() -> None:
    """'\\ud800' is valid JSON that the SDK's stdio parser refuses: the bridge dropped the request (the
    client waited forever); it now forwards it with U+FFFD in its place."""
    import anyio
    from mcp import types

    line = '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"query":"a \\ud800"}}}'
    try:
        types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        pytest.fail("the SDK now accepts lone surrogates: this repair can go")
    except ValidationError as exc:
        refused = exc
    local_send, local_read = anyio.create_memory_object_stream[SessionMessage | Exception](4)
    local_write, _local_out = anyio.create_memory_object_stream[SessionMessage](4)
    remote_send, remote_read = anyio.create_memory_object_stream[SessionMessage | Exception](4)
    remote_write, remote_out = anyio.create_memory_object_stream[SessionMessage](4)
    await local_send.send(refused)
    await local_send.aclose()
    with anyio.fail_after(10):
        await forward(local_read, local_write, remote_read, remote_write)
    sent = remote_out.receive_nowait().message
    for stream in (local_read, local_write, _local_out, remote_send, remote_read, remote_write, remote_out):
        await stream.aclose()
    assert isinstance(sent, JSONRPCRequest) and sent.id == 7
    assert sent.params is not None and sent.params["arguments"] == {"query": "a \ufffd"}
