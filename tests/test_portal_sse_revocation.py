"""A revoked grant ends its legacy-SSE stream (codemode_portal/_streams.py), over real HTTP.

The SSE transport sends every client message as its own POST (checked, and refused once the
token is revoked), but the answers come on one long GET. Before this, the stream outlived the
revocation: the SDK's SSE client only logged the refused POST and the call waited forever. Now
the client sees its session end: at once when it posts with the revoked token, and within
``sse_recheck_seconds`` when it posts nothing. Nobody else can end a stream by knowing its
session id, and an expired (not revoked) token does not end it.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from typing import Any

import anyio
import httpx
import httpx2
import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from codemode_portal._crypto import ACCESS_PREFIX, new_token, token_hash
from codemode_portal._store import TokenRecord
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError
from portal_harness import PETSTORE, Flow, RunningPortal, running_portal

SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"
"""
HANG = 60  # seconds: a bound on a hang, not a timing target


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    """Streams re-check their grant every 0.5 s."""
    settings = "registrations_per_ip_hour = 10000\nsse_recheck_seconds = 0.5\n"
    with running_portal(tmp_path_factory.mktemp("sse"), SERVERS, portal=settings) as running:
        yield running


@pytest.fixture(scope="module")
def no_recheck(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    """Streams re-check only once an hour: what ends a stream here is the refused POST."""
    settings = "registrations_per_ip_hour = 10000\nsse_recheck_seconds = 3600\n"
    with running_portal(tmp_path_factory.mktemp("sse-post"), SERVERS, portal=settings) as running:
        yield running


class Bearer(httpx2.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, Any, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def grant_of(portal: RunningPortal, access_token: str) -> str:
    view = portal.portal.store.find_token(token_hash(access_token))
    assert view is not None
    return view.token.grant_id


def _text(result: Any) -> str:
    return "".join(c.text for c in result.content if hasattr(c, "text"))


async def test_the_sdk_sse_client_sees_its_session_end_when_its_grant_is_revoked(no_recheck: RunningPortal) -> None:
    portal = no_recheck
    with Flow(portal) as flow:
        flow.register()
        tokens = flow.tokens()
        ended: MCPError | None = None
        with anyio.move_on_after(HANG) as hang:  # bounds the whole session: a hang may sit in its exit too
            async with sse_client(f"{portal.base}/sse/petstore", auth=Bearer(tokens["access_token"])) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    hits = _text(await session.call_tool("search", {"query": "find pets by status"}))
                    assert "findPetsByStatus" in hits or "find_pets_by_status" in hits, hits
                    # the client's refresh token revokes the whole grant (RFC 7009 at /revoke)
                    revoked = flow.browser.post("/revoke", data={"client_id": flow.client_id,
                                                                 "token": tokens["refresh_token"]})  # fmt: skip
                    assert revoked.status_code == 200, revoked.text
                    try:
                        await session.call_tool("search", {"query": "find pets by status"})
                    except MCPError as exc:
                        ended = exc
        assert not hang.cancelled_caught, "the call hung: the stream outlived its revoked grant"
        assert ended is not None and "closed" in str(ended).lower(), ended


def open_stream(portal: RunningPortal, token: str, http: httpx.Client) -> tuple[httpx.Response, Iterator[str], str]:
    """A raw SSE GET: the response, its line iterator and the message endpoint of the session."""
    request = http.build_request("GET", "/sse/petstore", headers={"Authorization": f"Bearer {token}",
                                                                  "Accept": "text/event-stream"})  # fmt: skip
    response = http.send(request, stream=True)
    assert response.status_code == 200, response.read()
    lines = response.iter_lines()
    for line in lines:
        if line.startswith("data: ") and "session_id=" in line:
            return response, lines, line.removeprefix("data: ").strip()
    raise AssertionError("no endpoint event")


def still_open(lines: Iterator[str]) -> bool:
    """True if nothing ends the stream within the client's read timeout (no event is due: the
    SDK's keep-alive comes every 15 s)."""
    try:
        for _ in lines:
            pass
    except httpx.ReadTimeout:
        return True
    return False


def ends(lines: Iterator[str]) -> bool:
    """True if the server closes the stream (cleanly) before the read timeout."""
    try:
        for _ in lines:
            pass
    except httpx.ReadTimeout:
        return False
    return True


def test_a_stream_that_posts_nothing_ends_within_the_recheck_interval(portal: RunningPortal) -> None:
    with Flow(portal) as flow:
        flow.register()
        token = flow.tokens()["access_token"]
    with httpx.Client(base_url=portal.base, trust_env=False, timeout=httpx.Timeout(HANG, read=2.0)) as http:
        response, lines, _ = open_stream(portal, token, http)
        try:
            assert still_open(lines)  # several re-checks passed: a live grant keeps its stream
        finally:
            response.close()
    with httpx.Client(base_url=portal.base, trust_env=False, timeout=httpx.Timeout(HANG, read=HANG)) as http:
        with Flow(portal) as flow:
            flow.register()
            token = flow.tokens()["access_token"]
        response, lines, _ = open_stream(portal, token, http)
        try:
            started = time.monotonic()
            # revoked elsewhere: the operator's `codemode portal revoke`, /account, another replica
            portal.portal.store.revoke_grant(grant_of(portal, token), time.time())
            assert ends(lines), "the stream outlived its revoked grant"
            assert time.monotonic() - started < HANG
        finally:
            response.close()


def test_only_the_streams_own_client_can_end_it_by_posting(no_recheck: RunningPortal) -> None:
    portal = no_recheck
    portal.portal.users.add("mallory", "mallory-password")
    with Flow(portal) as alice, Flow(portal) as mallory:
        alice.register()
        token = alice.tokens()["access_token"]
        mallory.client_id = alice.client_id
        mallory.login("mallory", "mallory-password")
        theirs = mallory.tokens()["access_token"]
    store = portal.portal.store
    store.revoke_grant(grant_of(portal, theirs), time.time())
    view = store.find_token(token_hash(token))
    assert view is not None
    expired = new_token(ACCESS_PREFIX)  # alice's own grant, a token past its lifetime
    past = {**view.token.__dict__, "hash": token_hash(expired), "expires_at": time.time() - 1}
    store.save_tokens(TokenRecord(**past))
    with httpx.Client(base_url=portal.base, trust_env=False, timeout=httpx.Timeout(HANG, read=HANG)) as http:
        response, lines, endpoint = open_stream(portal, token, http)
        try:
            ping = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
            for other in (theirs, expired):  # mallory's revoked token; alice's expired one
                r = http.post(endpoint, json=ping, headers={"Authorization": f"Bearer {other}"})
                assert r.status_code == 401, r.text
            r = http.post(endpoint, json=ping, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 202, r.text  # the session still works for its owner...
            for line in lines:  # ...and its stream carries the answer: nothing ended it
                if line.startswith("data: ") and '"id":7' in line.replace(" ", ""):
                    break
            else:
                raise AssertionError("the stream was ended by someone else's revoked token, or by an expiry")
        finally:
            response.close()
