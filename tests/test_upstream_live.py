"""HttpxUpstream end to end against real httpbin and Kinto servers on loopback."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from upstreams import RunningServer

from codemode._credentials import Credentials
from codemode._errors import UpstreamError
from codemode._ir import SecurityScheme
from codemode._scrub import REDACTED
from codemode._upstream import (
    AuditEvent,
    HttpxUpstream,
    UpstreamRequest,
    UpstreamSettings,
)

BEARER = SecurityScheme("bearer", "http", scheme="bearer")
BASIC = SecurityScheme("basic", "http", scheme="basic")
API_KEY = SecurityScheme("key", "apiKey", location="query", param_name="api_key")
TOKEN = "live-bearer-token-4f9a"
USER, PASSWORD = "alice", "pa55-w0rd-live"
QUERY_KEY = "query-key-77/x"


def req(method: str, url: str, **kw: object) -> UpstreamRequest:
    return UpstreamRequest(operation="live", method=method, url=url, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def httpbin(httpbin_url: str) -> AsyncIterator[HttpxUpstream]:
    credentials = Credentials.from_env(
        {"bearer": BEARER, "basic": BASIC, "key": API_KEY},
        {
            "CODEMODE_BEARER": TOKEN,
            "CODEMODE_BASIC_USERNAME": USER,
            "CODEMODE_BASIC_PASSWORD": PASSWORD,
            "CODEMODE_KEY": QUERY_KEY,
        },
    )
    settings = UpstreamSettings(
        base_url=httpbin_url,
        max_response_bytes=100_000,
        max_retry_wait_seconds=0.2,
        headers={"X-Static-Secret": "static-secret-value"},
    )
    async with HttpxUpstream(settings, credentials=credentials) as upstream:
        yield upstream


async def test_get_anything_with_query(httpbin: HttpxUpstream) -> None:
    res = await httpbin.send(req("GET", "/anything", params=[("a", "1"), ("a", "2"), ("b", "é")]))
    assert res.status == 200
    assert res.body["args"] == {"a": ["1", "2"], "b": "é"}
    assert res.body["method"] == "GET"
    assert res.body["headers"]["User-Agent"] == "codemode-mcp"


async def test_post_json(httpbin: HttpxUpstream) -> None:
    res = await httpbin.send(req("POST", "/anything", json={"n": 1, "s": ["x"]}))
    assert res.status == 200 and res.body["json"] == {"n": 1, "s": ["x"]}


async def test_post_form(httpbin: HttpxUpstream) -> None:
    res = await httpbin.send(req("POST", "/post", data={"f": "v"}))
    assert res.body["form"] == {"f": "v"}


async def test_status_503_retried_then_returned(httpbin_url: str) -> None:
    events: list[AuditEvent] = []
    settings = UpstreamSettings(base_url=httpbin_url, max_retries=2, max_retry_wait_seconds=0.1)
    async with HttpxUpstream(settings, audit_hooks=[events.append]) as upstream:
        res = await upstream.send(req("GET", "/status/503"))
    assert (res.status, res.attempts) == (503, 3)
    assert [(e.status, e.attempts, e.error) for e in events] == [(503, 3, None)]


async def test_status_418_returned(httpbin: HttpxUpstream) -> None:
    res = await httpbin.send(req("GET", "/status/418"))
    assert res.status == 418 and res.attempts == 1
    assert "teapot" in res.body


async def test_delay_times_out(httpbin_url: str) -> None:
    settings = UpstreamSettings(base_url=httpbin_url, timeout_seconds=1.0)
    async with HttpxUpstream(settings) as upstream:
        with pytest.raises(UpstreamError) as info:
            await upstream.send(req("GET", "/delay/3"))
    assert info.value.code == "upstream.timeout"
    assert "timeout_seconds=1" in info.value.message


async def test_bytes_over_cap(httpbin: HttpxUpstream) -> None:
    assert (await httpbin.send(req("GET", "/bytes/1000"))).body["content_type"] == ("application/octet-stream")
    with pytest.raises(UpstreamError) as info:
        await httpbin.send(req("GET", "/bytes/100001"))
    assert info.value.code == "upstream.response_too_large"
    assert "max_response_bytes=100000" in info.value.message


async def test_stream_over_cap(httpbin: HttpxUpstream) -> None:
    # /stream-bytes is chunked: no Content-Length, so the cap applies while reading.
    with pytest.raises(UpstreamError, match="stopped reading"):
        await httpbin.send(req("GET", "/stream-bytes/102400", params=[("chunk_size", "4096")]))


async def test_unreachable(httpbin_url: str) -> None:
    from upstreams import free_port

    port = free_port()
    settings = UpstreamSettings(base_url=f"http://127.0.0.1:{port}", max_retry_wait_seconds=0.05)
    async with HttpxUpstream(settings) as upstream:
        with pytest.raises(UpstreamError) as info:
            await upstream.send(req("GET", "/x"))
    assert info.value.code == "upstream.unreachable"
    assert f"127.0.0.1:{port}" in info.value.message


async def test_bearer(httpbin: HttpxUpstream) -> None:
    assert (await httpbin.send(req("GET", "/bearer"))).status == 401
    res = await httpbin.send(req("GET", "/bearer", security=(("bearer",),)))
    assert res.status == 200
    assert res.body == {"authenticated": True, "token": REDACTED}


async def test_basic(httpbin: HttpxUpstream) -> None:
    res = await httpbin.send(req("GET", f"/basic-auth/{USER}/x", security=(("basic",),)))
    assert res.status == 401
    res = await httpbin.send(req("GET", f"/basic-auth/{USER}/{PASSWORD}", security=(("basic",),)))
    assert res.status == 200 and res.body["authenticated"] is True


@pytest.mark.parametrize("path", ["/headers", "/anything", "/response-headers"])
async def test_echoed_secrets_are_scrubbed(httpbin: HttpxUpstream, path: str) -> None:
    basic_b64 = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    security = (("bearer", "key"),) if path != "/anything" else (("basic", "key"),)
    params = [("echo", TOKEN), ("X-Echo", f"Basic {basic_b64}")]
    res = await httpbin.send(req("GET", path, params=params, security=security))
    assert res.status == 200
    dumped = json.dumps(res.body) + json.dumps(res.headers)
    for secret in (TOKEN, PASSWORD, basic_b64, QUERY_KEY, "static-secret-value"):
        assert secret not in dumped, secret
    assert "query-key-77%2Fx" not in dumped
    assert REDACTED in dumped
    if path == "/headers":
        headers = res.body["headers"]
        assert headers["Authorization"] == REDACTED
        assert headers["X-Static-Secret"] == REDACTED
    if path == "/response-headers":  # the secret comes back as response headers
        assert res.headers["echo"] == REDACTED and res.headers["x-echo"] == REDACTED


async def test_kinto_bucket_lifecycle(kinto: RunningServer) -> None:
    credentials = Credentials.from_env(
        {"kinto": BASIC},
        {"CODEMODE_KINTO": f"{kinto.info.username}:{kinto.info.password}"},
    )
    bucket = f"b{uuid.uuid4().hex[:8]}"
    sec = (("kinto",),)
    async with HttpxUpstream(UpstreamSettings(base_url=kinto.base_url), credentials=credentials) as upstream:
        anon = await upstream.send(req("PUT", f"/buckets/{bucket}x", json={"data": {}}))
        assert anon.status in (401, 403)

        created = await upstream.send(req("PUT", f"/buckets/{bucket}", json={"data": {"note": "hi"}}, security=sec))
        assert created.status in (200, 201), created.body
        assert created.body["data"]["id"] == bucket

        got = await upstream.send(req("GET", f"/buckets/{bucket}", security=sec))
        assert got.status == 200 and got.body["data"]["note"] == "hi"
        assert got.body["permissions"]["write"] == ["account:admin"]

        gone = await upstream.send(req("DELETE", f"/buckets/{bucket}", security=sec))
        assert gone.status == 200 and gone.body["data"]["deleted"] is True
        missing = await upstream.send(req("GET", f"/buckets/{bucket}", security=sec))
        assert missing.status in (403, 404)
        echoed = json.dumps(got.body) + json.dumps(got.headers)
        assert kinto.info.password not in echoed


async def test_kinto_unauthenticated_write_is_returned(kinto: RunningServer) -> None:
    async with HttpxUpstream(UpstreamSettings(base_url=kinto.base_url)) as upstream:
        res = await upstream.send(req("PUT", "/buckets/nope", json={"data": {}}))
    assert res.status in (401, 403)
    assert res.body["errno"] in (104, 121)
