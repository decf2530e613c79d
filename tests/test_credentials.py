from __future__ import annotations

import asyncio
import base64
import json
from urllib.parse import parse_qs

import httpx
import pytest

from codemode._credentials import Credentials, env_var_name
from codemode._errors import UpstreamError
from codemode._ir import SecurityScheme
from codemode._upstream import UpstreamRequest

SCHEMES = {
    "api_key": SecurityScheme("api_key", "apiKey", location="header", param_name="X-API-Key"),
    "queryKey": SecurityScheme("queryKey", "apiKey", location="query", param_name="key"),
    "session": SecurityScheme("session", "apiKey", location="cookie", param_name="sid"),
    "bearerAuth": SecurityScheme("bearerAuth", "http", scheme="bearer"),
    "basic-auth": SecurityScheme("basic-auth", "http", scheme="basic"),
    "oauth": SecurityScheme("oauth", "oauth2", token_url="https://auth.test/token", scopes=("read", "write")),
    "oidc": SecurityScheme("oidc", "openIdConnect"),
    "mtls": SecurityScheme("mtls", "mutualTLS"),
}


def request(*alternatives: tuple[str, ...], **kw: object) -> UpstreamRequest:
    base: dict[str, object] = {
        "operation": "op",
        "method": "GET",
        "url": "https://api.test/x",
        "params": [("a", "1")],
        "headers": {"Accept": "application/json"},
        "cookies": {},
        "security": alternatives,
    }
    base.update(kw)
    return UpstreamRequest(**base)  # type: ignore[arg-type]


def test_env_var_names() -> None:
    assert env_var_name("api_key") == "CODEMODE_API_KEY"
    assert env_var_name("petstore-auth") == "CODEMODE_PETSTORE_AUTH"
    assert env_var_name("bearerAuth") == "CODEMODE_BEARER_AUTH"
    assert env_var_name("HTTPBearer") == "CODEMODE_HTTPBEARER"
    assert env_var_name("OAuth2") == "CODEMODE_OAUTH2"
    assert env_var_name("my key!", prefix="X_") == "X_MY_KEY"


async def test_api_key_header_query_cookie() -> None:
    env = {
        "CODEMODE_API_KEY": "header-key-1",
        "CODEMODE_QUERY_KEY": "query-key-2",
        "CODEMODE_SESSION": "cookie-3",
    }
    creds = Credentials.from_env(SCHEMES, env)
    out = await creds.apply(request(("api_key", "queryKey", "session")))
    assert out.headers == {"Accept": "application/json", "X-API-Key": "header-key-1"}
    assert out.params == [("a", "1"), ("key", "query-key-2")]
    assert out.cookies == {"sid": "cookie-3"}
    assert {"header-key-1", "query-key-2", "cookie-3"} <= creds.secrets()


async def test_injection_overrides_caller_values_case_insensitively() -> None:
    creds = Credentials.from_env(SCHEMES, {"CODEMODE_API_KEY": "real-key", "CODEMODE_QUERY_KEY": "query-q"})
    req = request(("api_key",), headers={"x-api-key": "guest-supplied"})
    assert (await creds.apply(req)).headers == {"X-API-Key": "real-key"}
    req = request(("queryKey",), params=[("key", "guest"), ("b", "2")])
    assert (await creds.apply(req)).params == [("b", "2"), ("key", "query-q")]


async def test_bearer() -> None:
    creds = Credentials.from_env(SCHEMES, {"CODEMODE_BEARER_AUTH": "tok-abcdef"})
    out = await creds.apply(request(("bearerAuth",)))
    assert out.headers["Authorization"] == "Bearer tok-abcdef"
    assert {"tok-abcdef", "Bearer tok-abcdef"} <= creds.secrets()


@pytest.mark.parametrize(
    "env",
    [
        {
            "CODEMODE_BASIC_AUTH_USERNAME": "alice",
            "CODEMODE_BASIC_AUTH_PASSWORD": "pw:with:colons",
        },
        {"CODEMODE_BASIC_AUTH": "alice:pw:with:colons"},
    ],
)
async def test_basic(env: dict[str, str]) -> None:
    creds = Credentials.from_env(SCHEMES, env)
    out = await creds.apply(request(("basic-auth",)))
    encoded = base64.b64encode(b"alice:pw:with:colons").decode()
    assert out.headers["Authorization"] == f"Basic {encoded}"
    assert {encoded, "pw:with:colons", f"Basic {encoded}"} <= creds.secrets()


async def test_other_http_scheme_and_static_oauth_token() -> None:
    schemes = {"tok": SecurityScheme("tok", "http", scheme="Token")}
    creds = Credentials.from_env(schemes, {"CODEMODE_TOK": "abcdefgh"})
    assert (await creds.apply(request(("tok",)))).headers["Authorization"] == "Token abcdefgh"
    creds = Credentials.from_env(SCHEMES, {"CODEMODE_OIDC": "id-token-1", "CODEMODE_OAUTH": "at-2-token"})
    assert (await creds.apply(request(("oidc",)))).headers["Authorization"] == "Bearer id-token-1"
    assert (await creds.apply(request(("oauth",)))).headers["Authorization"] == "Bearer at-2-token"


async def test_alternatives_first_satisfiable_wins() -> None:
    creds = Credentials.from_env(
        SCHEMES,
        {"CODEMODE_BEARER_AUTH": "bearer-tok", "CODEMODE_QUERY_KEY": "qk-value"},
    )
    # (api_key AND bearerAuth) is not satisfiable: api_key is missing.
    out = await creds.apply(request(("api_key", "bearerAuth"), ("queryKey",), ("bearerAuth",)))
    assert "Authorization" not in out.headers
    assert out.params[-1] == ("key", "qk-value")
    # An optional-auth alternative (()) does not stop configured credentials being sent.
    out = await creds.apply(request((), ("bearerAuth",)))
    assert out.headers["Authorization"] == "Bearer bearer-tok"


async def test_nothing_satisfiable_is_unauthenticated() -> None:
    creds = Credentials.from_env(SCHEMES, {})
    req = request(("api_key",), ("bearerAuth",))
    assert await creds.apply(req) is req
    assert await creds.apply(request()) == request()


def test_describe_names_only() -> None:
    env = {"CODEMODE_API_KEY": "value-never-shown", "CODEMODE_OAUTH_CLIENT_ID": "cid"}
    lines = Credentials.from_env(SCHEMES, env).describe()
    text = "\n".join(lines)
    assert "value-never-shown" not in text and "cid" not in text.replace("CLIENT_ID", "")
    assert len(lines) == len(SCHEMES)
    assert "api_key (apiKey in header X-API-Key): configured from CODEMODE_API_KEY" in lines
    assert any("missing CODEMODE_BASIC_AUTH_USERNAME" in line for line in lines)
    assert any(line.startswith("mtls") and "not supported" in line for line in lines)
    assert any(line.startswith("oauth ") and "CODEMODE_OAUTH_CLIENT_SECRET" in line for line in lines)


class TokenServer:
    """A MockTransport token endpoint that counts requests."""

    def __init__(self, expires_in: object = 3600, status: int = 200) -> None:
        self.calls = 0
        self.expires_in = expires_in
        self.status = status
        self.last: httpx.Request | None = None

    async def handler(self, req: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.last = req
        await asyncio.sleep(0.01)  # let concurrent callers pile up
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "invalid_client"})
        body = {"access_token": f"access-{self.calls}", "token_type": "bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in  # type: ignore[assignment]
        return httpx.Response(200, json=body)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def oauth_creds(server: TokenServer, clock: Clock, **env: str) -> Credentials:
    base = {
        "CODEMODE_OAUTH_CLIENT_ID": "client-id",
        "CODEMODE_OAUTH_CLIENT_SECRET": "client-secret",
    }
    creds = Credentials.from_env(SCHEMES, {**base, **env}, transport=httpx.MockTransport(server.handler))
    creds._clock = clock  # test seam
    return creds


async def test_oauth_client_credentials_fetch_and_cache() -> None:
    server, clock = TokenServer(expires_in=100), Clock()
    creds = oauth_creds(server, clock)
    seen: list[str] = []
    creds.bind(on_secret=seen.append)
    try:
        out = await creds.apply(request(("oauth",)))
        assert out.headers["Authorization"] == "Bearer access-1"
        assert server.last is not None
        assert str(server.last.url) == "https://auth.test/token"
        form = parse_qs(server.last.content.decode())
        assert form == {"grant_type": ["client_credentials"], "scope": ["read write"]}
        expected = base64.b64encode(b"client-id:client-secret").decode()
        assert server.last.headers["Authorization"] == f"Basic {expected}"
        assert {"access-1", "Bearer access-1"} <= set(seen)
        assert "access-1" in creds.secrets()

        clock.now += 60  # 40 s left: still fresh
        await creds.apply(request(("oauth",)))
        assert server.calls == 1
        clock.now += 15  # 25 s left: inside the 30 s refresh margin
        out = await creds.apply(request(("oauth",)))
        assert server.calls == 2
        assert out.headers["Authorization"] == "Bearer access-2"
    finally:
        await creds.aclose()


async def test_oauth_concurrent_fetches_coalesce() -> None:
    server = TokenServer()
    creds = oauth_creds(server, Clock())
    try:
        outs = await asyncio.gather(*(creds.apply(request(("oauth",))) for _ in range(10)))
        assert server.calls == 1
        assert {o.headers["Authorization"] for o in outs} == {"Bearer access-1"}
    finally:
        await creds.aclose()


async def test_oauth_token_url_override_and_no_expiry() -> None:
    server, clock = TokenServer(expires_in=None), Clock()
    creds = oauth_creds(server, clock, CODEMODE_OAUTH_TOKEN_URL="https://other.test/t")
    try:
        await creds.apply(request(("oauth",)))
        assert server.last is not None and server.last.url.host == "other.test"
        clock.now += 10**6
        await creds.apply(request(("oauth",)))
        assert server.calls == 1
        creds.invalidate("oauth")
        await creds.apply(request(("oauth",)))
        assert server.calls == 2
    finally:
        await creds.aclose()


async def test_oauth_failure_is_clear_and_secret_free() -> None:
    creds = oauth_creds(TokenServer(status=401), Clock())
    try:
        with pytest.raises(UpstreamError) as info:
            await creds.apply(request(("oauth",)))
    finally:
        await creds.aclose()
    assert info.value.code == "upstream.auth_failed"
    assert "HTTP 401" in info.value.message and "invalid_client" in info.value.message
    assert "client-secret" not in info.value.message


async def test_oauth_token_endpoint_unreachable() -> None:
    def boom(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    creds = Credentials.from_env(
        SCHEMES,
        {"CODEMODE_OAUTH_CLIENT_ID": "i", "CODEMODE_OAUTH_CLIENT_SECRET": "secret-s"},
        transport=httpx.MockTransport(boom),
    )
    try:
        with pytest.raises(UpstreamError) as info:
            await creds.apply(request(("oauth",)))
    finally:
        await creds.aclose()
    assert info.value.code == "upstream.unreachable"
    assert "https://auth.test/token" in info.value.message


def test_oauth_without_token_url_is_missing() -> None:
    schemes = {"o": SecurityScheme("o", "oauth2")}
    creds = Credentials.from_env(schemes, {"CODEMODE_O_CLIENT_ID": "i", "CODEMODE_O_CLIENT_SECRET": "secret-s"})
    assert creds.configured() == set()
    assert "CODEMODE_O_TOKEN_URL" in creds.describe()[0]


def test_token_request_body_is_json_safe() -> None:
    # The describe() output is meant for logs and the README: plain strings only.
    lines = Credentials.from_env(SCHEMES, {}).describe()
    assert json.loads(json.dumps(lines)) == lines
