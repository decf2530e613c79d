"""The portal as the official ``mcp`` SDK's OAuth client support (``OAuthClientProvider``) meets it,
over real HTTP: (1) discovery (RFC 9728 → RFC 8414), (2) registration, once by a Client ID
Metadata Document served by the test over https on loopback and once by RFC 7591, (3) the
authorization with the real sign-in and consent forms driven by the test, (4) the code exchange,
(5) ``search`` then ``execute`` against a real httpbin, (6) a refresh, (7) revocation, (8) the
next call refused. Nothing here is the portal's own client code: the SDK decides every request."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import httpx2
import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from connect_harness import MetadataDocuments, text
from consent_browser import consent
from mcp import Client
from mcp.client.auth import OAuthClientProvider, OAuthFlowError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from portal_harness import HTTPBIN_SPEC, RunningPortal, running_portal
from pydantic import AnyUrl

REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the test reads the portal's redirect


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Person:
    """The person at the browser: signs in and answers the consent form, over plain HTTP."""

    def __init__(self, portal: RunningPortal, *, uncheck: str = "") -> None:
        self.portal = portal
        self.uncheck = uncheck
        self.urls: list[str] = []
        self.records: list[dict[str, Any]] = []
        self.refuse_more = False

    async def redirect(self, url: str) -> None:
        self.urls.append(url)

    async def callback(self) -> AuthorizationCodeResult:
        if self.refuse_more:
            raise OAuthFlowError("the person is not here any more")
        url = self.urls[-1]
        env = {"CONSENT_USER": "admin", "CONSENT_PASSWORD": self.portal.password, "CONSENT_UNCHECK": self.uncheck}
        answer: dict[str, Any] = {}

        def run() -> None:
            answer.update(consent(url, env, follow_callback=False))

        await anyio.to_thread.run_sync(run)
        self.records.append(answer)
        q = {k: v[0] for k, v in parse_qs(urlsplit(str(answer["location"])).query).items()}
        return AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss"))


def _provider(portal: RunningPortal, person: Person, storage: MemoryStorage, **kwargs: Any) -> OAuthClientProvider:
    metadata = OAuthClientMetadata(
        client_name="SDK test client", redirect_uris=[AnyUrl(REDIRECT)], token_endpoint_auth_method="none",
        grant_types=["authorization_code", "refresh_token"], response_types=["code"],
    )  # fmt: skip
    return OAuthClientProvider(f"{portal.base}/mcp/httpbin", metadata, storage, redirect_handler=person.redirect,
                               callback_handler=person.callback, **kwargs)  # fmt: skip


@pytest.fixture
def portal(tmp_path: Path, httpbin_url: str) -> Iterator[RunningPortal]:
    servers = f'[servers.httpbin]\nspec = "{HTTPBIN_SPEC}"\nbase_url = "{httpbin_url}"\n'
    extra = "allow_private_client_metadata_hosts = true"
    with running_portal(tmp_path, servers, portal=extra) as running:
        yield running


async def _session_steps(portal: RunningPortal, person: Person, provider: OAuthClientProvider) -> None:
    """(1)–(8) through the SDK, on one provider."""
    url = f"{portal.base}/mcp/httpbin"
    async with httpx2.AsyncClient(auth=provider, timeout=120) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            # (1)-(4) happened on the way in: the first request got 401, the SDK discovered,
            # registered, sent the person to consent and exchanged the code.
            assert len(person.urls) == 1
            ctx = provider.context
            assert ctx.protected_resource_metadata is not None
            assert str(ctx.protected_resource_metadata.resource) == url
            assert ctx.oauth_metadata is not None and str(ctx.oauth_metadata.issuer).rstrip("/") == portal.base
            params = {k: v[0] for k, v in parse_qs(urlsplit(person.urls[0]).query).items()}
            assert params["code_challenge_method"] == "S256" and params["resource"] == url
            assert set(params["scope"].split()) == {"httpbin:read", "httpbin:write"}
            assert person.records[0]["scopes"] == ["httpbin:read", "httpbin:write"]  # the consent offered both
            first = ctx.current_tokens
            assert first is not None and first.access_token.startswith("cmp_at_") and first.refresh_token

            # (5) search, then execute against httpbin
            hits = text(await client.call_tool("search", {"query": "return the request headers"}))
            assert "GET /headers" in hits
            ran = await client.call_tool("execute", {
                "code": "h = api.request_inspection.list_headers()['headers']\n"
                        "result = sorted(k.lower() for k in h)"})  # fmt: skip
            assert not ran.is_error, text(ran)
            assert "authorization" not in json.loads(text(ran))["result"]  # the token stays in the portal

            # (6) refresh: the access token is due, the SDK refreshes before the next call
            ctx.token_expiry_time = time.time() - 1
            ran = await client.call_tool("execute", {"code": "result = api.request_inspection.list_user_agent()"})
            assert not ran.is_error, text(ran)
            second = ctx.current_tokens
            assert second is not None and second.access_token != first.access_token
            assert second.refresh_token and second.refresh_token != first.refresh_token  # rotated
            old = httpx.post(f"{portal.base}/token", data={"grant_type": "refresh_token", "client_id":
                             ctx.client_info.client_id if ctx.client_info else "",
                             "refresh_token": first.refresh_token}, timeout=30)  # fmt: skip
            assert old.status_code == 400  # the rotated one is spent (and its replay revokes the grant)

            # (7) revoke (RFC 7009), with a new grant first: the replay above ended the old one
            person.urls.clear()
            ctx.clear_tokens()
            hits = text(await client.call_tool("search", {"query": "user agent"}))  # a fresh sign-in
            assert len(person.urls) == 1 and "/user-agent" in hits
            third = ctx.current_tokens
            assert third is not None and third.refresh_token
            revoked = httpx.post(f"{portal.base}/revoke", data={"token": third.refresh_token, "client_id":
                                 ctx.client_info.client_id if ctx.client_info else ""}, timeout=30)  # fmt: skip
            assert revoked.status_code == 200

    # (8) the next call is refused: the portal answers 401, the SDK tries to sign in again, and the
    # person does not come back
    person.refuse_more = True
    person.urls.clear()
    async with httpx2.AsyncClient(auth=provider, timeout=120) as http:
        with pytest.raises(ExceptionGroup) as refused:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                await client.call_tool("search", {"query": "headers"})
    assert refused.group_contains(OAuthFlowError, match="not here")
    assert len(person.urls) == 1  # sent back to the sign-in: the revoked token was refused
    direct = httpx.post(url, json={}, headers={"Authorization": f"Bearer {third.access_token}"}, timeout=30)
    assert direct.status_code == 401 and 'error="invalid_token"' in direct.headers["www-authenticate"]


@pytest.mark.slow
async def test_sdk_client_by_dynamic_registration(portal: RunningPortal) -> None:
    person, storage = Person(portal), MemoryStorage()
    await _session_steps(portal, person, _provider(portal, person, storage))
    assert storage.client is not None and storage.client.client_id.startswith("cmp_client_")
    stored = portal.portal.store.find_client(storage.client.client_id)
    assert stored is not None and stored.kind != "cimd"


@pytest.mark.slow
async def test_sdk_client_by_client_id_metadata_document(portal: RunningPortal, tmp_path: Path) -> None:
    docs = MetadataDocuments(tmp_path / "tls")
    try:
        docs.trust_in(portal)
        client_id = docs.document("/sdk/client.json", [REDIRECT])
        person, storage = Person(portal), MemoryStorage()
        await _session_steps(portal, person, _provider(portal, person, storage, client_metadata_url=client_id))
        assert storage.client is not None and storage.client.client_id == client_id
        assert "/sdk/client.json" in docs.hits  # the portal fetched the document
        stored = portal.portal.store.find_client(client_id)
        assert stored is not None and stored.kind == "cimd"
        assert not portal.portal.store.list_clients() or all(
            c.kind == "cimd" for c in portal.portal.store.list_clients()
        )  # no dynamic registration happened
    finally:
        docs.close()
