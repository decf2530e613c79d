from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from codemode._credentials import Credentials
from codemode._errors import ConfigError, UpstreamError
from codemode._ir import SecurityScheme
from codemode._scrub import REDACTED
from codemode._upstream import (
    NO_BODY,
    AuditEvent,
    HttpxUpstream,
    UpstreamRequest,
    UpstreamSettings,
)

Handler = Callable[[httpx.Request], Any]


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make(
    handler: Handler,
    *,
    sleeps: Sleeps | None = None,
    events: list[AuditEvent] | None = None,
    credentials: Credentials | None = None,
    **settings: Any,
) -> HttpxUpstream:
    settings.setdefault("base_url", "https://api.test/v1")
    return HttpxUpstream(
        UpstreamSettings(**settings),
        credentials=credentials,
        audit_hooks=[events.append] if events is not None else [],
        transport=httpx.MockTransport(handler),
        sleep=sleeps or Sleeps(),
        rng=random.Random(0),
    )


def req(method: str = "GET", url: str = "/things", **kw: Any) -> UpstreamRequest:
    return UpstreamRequest(operation="things.list", method=method, url=url, **kw)


def sequence(
    *responses: httpx.Response | Exception,
) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


# -- requests and bodies -----------------------------------------------------------------


async def test_get_json_with_params_and_headers() -> None:
    handler, seen = sequence(httpx.Response(200, json={"ok": [1, 2]}))
    async with make(handler, headers={"X-Static": "s"}, user_agent="ua/1") as up:
        res = await up.send(req(params=[("a", "1"), ("a", "2"), ("b", "x y")], headers={"X-Req": "r"}))
    assert res.status == 200 and res.body == {"ok": [1, 2]} and res.attempts == 1
    assert res.headers["content-type"] == "application/json"
    assert res.elapsed_ms >= 0
    sent = seen[0]
    assert str(sent.url) == "https://api.test/v1/things?a=1&a=2&b=x+y"
    assert sent.headers["X-Static"] == "s" and sent.headers["X-Req"] == "r"
    assert sent.headers["User-Agent"] == "ua/1"


async def test_post_json_including_null() -> None:
    handler, seen = sequence(httpx.Response(201, json={"id": 1}))
    async with make(handler) as up:
        res = await up.send(req("POST", json={"name": "x"}))
        await up.send(req("POST", json=None))
        await up.send(req("POST"))
    assert res.status == 201
    assert json.loads(seen[0].content) == {"name": "x"}
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[1].content == b"null"
    assert seen[2].content == b"" and repr(NO_BODY) == "<_NoBody.NO_BODY: 'NO_BODY'>"


async def test_form_multipart_raw_and_cookies() -> None:
    handler, seen = sequence(httpx.Response(204))
    async with make(handler) as up:
        res = await up.send(req("POST", data={"a": "1"}, cookies={"sid": "c1"}))
        await up.send(req("POST", files={"f": ("a.txt", b"hello", "text/plain")}))
        await up.send(req("PUT", content=b"\x00raw", headers={"Content-Type": "x/y"}))
    assert res.body is None
    assert seen[0].content == b"a=1" and seen[0].headers["cookie"] == "sid=c1"
    assert b"hello" in seen[1].content
    assert seen[1].headers["content-type"].startswith("multipart/form-data")
    assert seen[2].content == b"\x00raw"


async def test_text_binary_and_bad_json_bodies() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    handler, _ = sequence(
        httpx.Response(200, text="héllo", headers={"Content-Type": "text/plain; charset=utf-8"}),
        httpx.Response(200, content=png, headers={"Content-Type": "image/png"}),
        httpx.Response(200, content=b"{not json", headers={"Content-Type": "application/json"}),
        httpx.Response(200, content=b"<a/>", headers={"Content-Type": "application/xml"}),
        httpx.Response(200, content=b'{"x":1}', headers={"Content-Type": "application/hal+json"}),
        httpx.Response(200, content=b"plain"),
    )
    bodies: list[Any] = []
    async with make(handler) as up:
        for _ in range(6):
            try:
                bodies.append((await up.send(req())).body)
            except UpstreamError as exc:  # JSON promised, not delivered: an error that carries the text
                assert exc.code == "upstream.invalid_json" and exc.status == 200 and "line 1 column 2" in exc.message
                bodies.append(exc.body)
    assert bodies[0] == "héllo"
    assert bodies[1] == {
        "base64": base64.b64encode(png).decode(),
        "content_type": "image/png",
    }
    assert bodies[2] == "{not json"
    assert bodies[3] == "<a/>"
    assert bodies[4] == {"x": 1}
    assert bodies[5] == "plain"


async def test_error_statuses_are_returned() -> None:
    handler, _ = sequence(httpx.Response(404, json={"message": "nope"}))
    async with make(handler) as up:
        res = await up.send(req())
    assert (res.status, res.body) == (404, {"message": "nope"})


async def test_set_cookie_does_not_persist_between_calls() -> None:
    handler, seen = sequence(httpx.Response(200, headers={"Set-Cookie": "sid=abc; Path=/"}))
    async with make(handler) as up:
        await up.send(req())
        await up.send(req())
    assert "cookie" not in seen[1].headers


async def test_relative_url_without_base_url() -> None:
    handler, _ = sequence(httpx.Response(200))
    async with make(handler, base_url=None) as up:
        with pytest.raises(ConfigError, match="base URL"):
            await up.send(req())
        assert (await up.send(req(url="https://abs.test/x"))).status == 200


# -- retries -----------------------------------------------------------------------------


async def test_retries_503_then_success_with_backoff() -> None:
    handler, seen = sequence(httpx.Response(503), httpx.Response(502), httpx.Response(200, json=1))
    sleeps = Sleeps()
    async with make(handler, sleeps=sleeps) as up:
        res = await up.send(req())
    assert (res.status, res.body, res.attempts, len(seen)) == (200, 1, 3, 3)
    assert len(sleeps.waits) == 2
    assert 0.25 <= sleeps.waits[0] <= 0.5  # 0.5 s ceiling, equal jitter
    assert 0.5 <= sleeps.waits[1] <= 1.0  # doubled


async def test_retries_exhausted_returns_last_response() -> None:
    handler, seen = sequence(httpx.Response(429, json={"e": "slow down"}))
    async with make(handler, max_retries=3) as up:
        res = await up.send(req("DELETE"))
    assert (res.status, res.attempts, len(seen)) == (429, 4, 4)
    assert res.body == {"e": "slow down"}


async def test_backoff_capped_by_max_retry_wait() -> None:
    handler, _ = sequence(httpx.Response(503))
    sleeps = Sleeps()
    async with make(handler, sleeps=sleeps, max_retries=6, max_retry_wait_seconds=1.5) as up:
        await up.send(req())
    assert len(sleeps.waits) == 6 and max(sleeps.waits) <= 1.5


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_no_retry_for_non_idempotent(method: str) -> None:
    handler, seen = sequence(httpx.Response(503))
    async with make(handler) as up:
        res = await up.send(req(method, json={}))
    assert (res.status, res.attempts, len(seen)) == (503, 1, 1)


async def test_no_retry_on_other_statuses() -> None:
    handler, seen = sequence(httpx.Response(500), httpx.Response(200))
    async with make(handler) as up:
        assert (await up.send(req())).status == 500
    assert len(seen) == 1


async def test_retry_after_seconds() -> None:
    handler, _ = sequence(httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200))
    sleeps = Sleeps()
    async with make(handler, sleeps=sleeps) as up:
        res = await up.send(req())
    assert res.status == 200 and sleeps.waits == [3.0]


async def test_retry_after_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=5)
    header = format_datetime(when, usegmt=True)
    handler, _ = sequence(httpx.Response(503, headers={"Retry-After": header}), httpx.Response(200))
    sleeps = Sleeps()
    async with make(handler, sleeps=sleeps) as up:
        res = await up.send(req())
    assert res.status == 200 and len(sleeps.waits) == 1
    assert 3.0 <= sleeps.waits[0] <= 5.0


async def test_retry_after_in_the_past_or_garbage() -> None:
    past = format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)
    handler, _ = sequence(
        httpx.Response(503, headers={"Retry-After": past}),
        httpx.Response(503, headers={"Retry-After": "soon"}),
        httpx.Response(200),
    )
    sleeps = Sleeps()
    async with make(handler, sleeps=sleeps) as up:
        assert (await up.send(req())).status == 200
    assert sleeps.waits[0] == 0.0 and 0.5 <= sleeps.waits[1] <= 1.0


async def test_retry_after_longer_than_cap_returns_response() -> None:
    handler, seen = sequence(httpx.Response(429, headers={"Retry-After": "3600"}, json={"e": "later"}))
    sleeps = Sleeps()
    async with make(handler, sleeps=sleeps, max_retry_wait_seconds=10) as up:
        res = await up.send(req())
    assert (res.status, res.attempts, res.body, sleeps.waits) == (
        429,
        1,
        {"e": "later"},
        [],
    )
    assert len(seen) == 1


async def test_connect_error_retried_for_get() -> None:
    handler, _ = sequence(httpx.ConnectError("refused"), httpx.Response(200, json=True))
    sleeps = Sleeps()
    async with make(handler, sleeps=sleeps) as up:
        res = await up.send(req())
    assert (res.status, res.attempts, len(sleeps.waits)) == (200, 2, 1)


async def test_connect_error_exhausted_is_unreachable() -> None:
    handler, seen = sequence(httpx.ConnectError("[Errno 111] Connection refused"))
    events: list[AuditEvent] = []
    async with make(handler, events=events, base_url="http://api.test:8123") as up:
        with pytest.raises(UpstreamError) as info:
            await up.send(req())
    err = info.value
    assert err.code == "upstream.unreachable" and err.operation == "things.list"
    assert "api.test:8123" in err.message and "Connection refused" in err.message
    assert len(seen) == 3
    assert [(e.error, e.attempts, e.status) for e in events] == [("upstream.unreachable", 3, None)]


async def test_connect_error_not_retried_for_post() -> None:
    handler, seen = sequence(httpx.ConnectError("refused"))
    async with make(handler) as up:
        with pytest.raises(UpstreamError, match=r"api\.test:443"):
            await up.send(req("POST"))
    assert len(seen) == 1


# -- timeouts and size caps --------------------------------------------------------------


async def test_read_timeout() -> None:
    handler, seen = sequence(httpx.ReadTimeout("slow"))
    async with make(handler, timeout_seconds=1.5) as up:
        with pytest.raises(UpstreamError) as info:
            await up.send(req())
    assert info.value.code == "upstream.timeout"
    assert "timeout_seconds=1.5" in info.value.message and "GET api.test:443/v1/things" in (info.value.message)
    assert len(seen) == 1  # read timeouts are not retried


async def test_connect_timeout_names_connect_setting() -> None:
    handler, seen = sequence(httpx.ConnectTimeout("slow"))
    async with make(handler, connect_timeout_seconds=2) as up:
        with pytest.raises(UpstreamError) as info:
            await up.send(req())
    assert info.value.code == "upstream.timeout"
    assert "connect_timeout_seconds=2" in info.value.message
    assert len(seen) == 3  # a connect timeout is a connect error: retried


async def test_overall_deadline_for_a_slow_handler() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    async with make(slow, timeout_seconds=0.1) as up:
        with pytest.raises(UpstreamError, match=r"timeout_seconds=0\.1") as info:
            await up.send(req())
    assert info.value.code == "upstream.timeout"


class Drip(httpx.AsyncByteStream):
    """A body without Content-Length, in chunks; counts how many were produced."""

    def __init__(self, chunks: int, size: int) -> None:
        self.chunks, self.size, self.produced, self.closed = chunks, size, 0, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.produced += 1
            yield b"x" * self.size

    async def aclose(self) -> None:
        self.closed = True


async def test_size_cap_streaming_stops_reading() -> None:
    stream = Drip(chunks=1000, size=1000)
    handler, _ = sequence(httpx.Response(200, stream=stream))
    events: list[AuditEvent] = []
    async with make(handler, events=events, max_response_bytes=10_000) as up:
        with pytest.raises(UpstreamError) as info:
            await up.send(req())
    assert info.value.code == "upstream.response_too_large"
    assert "max_response_bytes=10000" in info.value.message
    assert stream.produced == 11 and stream.closed
    assert events[0].error == "upstream.response_too_large" and events[0].status == 200


async def test_size_cap_by_content_length() -> None:
    handler, _ = sequence(httpx.Response(200, content=b"y" * 101))
    async with make(handler, max_response_bytes=100) as up:
        with pytest.raises(UpstreamError, match="Content-Length is 101"):
            await up.send(req())


async def test_body_exactly_at_cap_is_fine() -> None:
    handler, _ = sequence(httpx.Response(200, content=b"y" * 100))
    async with make(handler, max_response_bytes=100) as up:
        assert (await up.send(req())).body == "y" * 100


# -- audit, credentials, scrubbing -------------------------------------------------------


async def test_one_audit_event_per_send_without_query_values() -> None:
    handler, _ = sequence(httpx.Response(503), httpx.Response(200))
    events: list[AuditEvent] = []
    async with make(handler, events=events) as up:
        await up.send(req(url="/things?inline=secretish", params=[("q", "private")]))
    assert len(events) == 1
    event = events[0]
    assert (
        event.operation,
        event.method,
        event.status,
        event.attempts,
        event.error,
    ) == (
        "things.list",
        "GET",
        200,
        2,
        None,
    )
    assert event.url == "https://api.test/v1/things?inline&q"
    assert "private" not in event.url and "secretish" not in event.url


async def test_raising_audit_hook_is_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler, _ = sequence(httpx.Response(200))
    seen: list[AuditEvent] = []

    def broken(event: AuditEvent) -> None:
        raise RuntimeError("hook bug")

    up = HttpxUpstream(
        UpstreamSettings(base_url="https://api.test"),
        audit_hooks=[broken, seen.append],
        transport=httpx.MockTransport(handler),
    )
    with caplog.at_level(logging.WARNING, logger="codemode.upstream"):
        res = await up.send(req())
    await up.aclose()
    assert res.status == 200 and len(seen) == 1
    assert "audit hook" in caplog.text


async def test_credentials_injected_and_echo_scrubbed() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        headers = dict(request.headers)
        return httpx.Response(
            200,
            json={
                "headers": headers,
                "url": str(request.url),
                headers["x-api-key"]: "as key",
            },
            headers={
                "X-Echo-Key": headers["x-api-key"],
                "X-Static-Echo": "token static-abc",
            },
        )

    schemes = {
        "key": SecurityScheme("key", "apiKey", location="header", param_name="X-API-Key"),
        "q": SecurityScheme("q", "apiKey", location="query", param_name="k"),
    }
    creds = Credentials.from_env(schemes, {"CODEMODE_KEY": "key-value-123", "CODEMODE_Q": "q/value 456"})
    async with make(echo, credentials=creds, headers={"Authorization": "token static-abc"}) as up:
        res = await up.send(req(security=(("key", "q"),)))
    dumped = json.dumps(res.body) + json.dumps(res.headers)
    for secret in ("key-value-123", "q/value 456", "q%2Fvalue", "static-abc"):
        assert secret not in dumped
    assert res.body["headers"]["x-api-key"] == REDACTED
    assert res.body[REDACTED] == "as key"
    assert res.headers["x-echo-key"] == REDACTED
    assert res.headers["x-static-echo"] == REDACTED
    assert REDACTED in res.body["url"]


async def test_oauth_token_fetched_through_same_transport_and_scrubbed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            assert "X-Static" not in request.headers  # static headers stay off the token URL
            return httpx.Response(200, json={"access_token": "fetched-token-1", "expires_in": 60})
        return httpx.Response(200, json={"auth": request.headers["authorization"]})

    schemes = {"o": SecurityScheme("o", "oauth2", token_url="https://api.test/token")}
    creds = Credentials.from_env(
        schemes,
        {"CODEMODE_O_CLIENT_ID": "cid", "CODEMODE_O_CLIENT_SECRET": "csecret-1"},
    )
    async with make(handler, credentials=creds, headers={"X-Static": "static-v1"}) as up:
        res = await up.send(req(security=(("o",),)))
    assert res.body == {"auth": REDACTED}


async def test_secret_in_binary_body_is_scrubbed() -> None:
    handler, _ = sequence(
        httpx.Response(
            200,
            content=b"\x00\xffkey=binary-secret-1\x01",
            headers={"Content-Type": "application/octet-stream"},
        )
    )
    async with make(handler, headers={"X-Key": "binary-secret-1"}) as up:
        body = (await up.send(req())).body
    assert base64.b64decode(body["base64"]) == b"\x00\xffkey=[REDACTED]\x01"


def test_settings_validation_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        UpstreamSettings(timeout_seconds=0)
    assert info.value.code == "config.upstream" and "timeout_seconds" in info.value.message
    with pytest.raises(ConfigError, match="base_url"):
        UpstreamSettings(base_url="ftp://x")
    with pytest.raises(ConfigError, match="line break"):
        UpstreamSettings(headers={"X": "a\r\nB: c"})
    with pytest.raises(ConfigError, match=r"unknown|Extra"):
        UpstreamSettings(tiemout_seconds=3)


def test_settings_repr_hides_header_values() -> None:
    settings = UpstreamSettings(headers={"Authorization": "token very-secret"})
    assert "very-secret" not in repr(settings) and "very-secret" not in str(settings)
    with pytest.raises(pydantic_frozen_error()):
        settings.timeout_seconds = 3


def pydantic_frozen_error() -> type[Exception]:
    import pydantic

    return pydantic.ValidationError


async def test_refused_oauth_token_is_refetched_once() -> None:
    from codemode._credentials import Credentials
    from codemode._ir import SecurityScheme

    tokens = iter(["old-token-1", "new-token-2"])
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.host == "auth.test":
            return httpx.Response(200, json={"access_token": next(tokens), "expires_in": 3600})
        seen.append(req.headers["Authorization"])
        ok = req.headers["Authorization"] == "Bearer new-token-2"
        return httpx.Response(200 if ok else 401, json={"ok": ok})

    transport = httpx.MockTransport(handler)
    scheme = SecurityScheme("oauth", "oauth2", token_url="https://auth.test/token")
    creds = Credentials.from_env(
        {"oauth": scheme},
        {"CODEMODE_OAUTH_CLIENT_ID": "id", "CODEMODE_OAUTH_CLIENT_SECRET": "secret"},
        transport=transport,
    )
    async with HttpxUpstream(UpstreamSettings(), credentials=creds, transport=transport) as up:
        req = UpstreamRequest(operation="op", method="POST", url="https://api.test/x", security=(("oauth",),))
        resp = await up.send(req)
    assert resp.status == 200 and seen == ["Bearer old-token-1", "Bearer new-token-2"]
    await creds.aclose()
