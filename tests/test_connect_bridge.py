"""``codemode connect`` end to end: the official mcp stdio client starts the bridge as Claude
Desktop would; the bridge signs in to a running portal (discovery, registration, the real sign-in
and consent forms answered by a stand-in browser that ``webbrowser`` starts through ``$BROWSER``,
the redirect to the bridge's loopback listener, code, token), then ``search`` and ``execute``
reach a real httpbin through it. Then restarts, expiry, revocation, a denied consent, a portal
that is down, a Client ID Metadata Document, and two bridges sharing one token file."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from connect_harness import CODEMODE, Bridge, MetadataDocuments, text
from mcp.shared.exceptions import MCPError
from portal_harness import HTTPBIN_SPEC, RunningPortal, running_portal
from upstreams import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def portal(tmp_path: Path, httpbin_url: str) -> Iterator[RunningPortal]:
    servers = f'[servers.httpbin]\nspec = "{HTTPBIN_SPEC}"\nbase_url = "{httpbin_url}"\n'
    (tmp_path / "portal").mkdir()
    with running_portal(tmp_path / "portal", servers, portal="allow_private_client_metadata_hosts = true") as p:
        yield p


def _bridge(portal: RunningPortal, home: Path, **kwargs: Any) -> Bridge:
    return Bridge(f"{portal.base}/mcp/httpbin", home, password=portal.password, **kwargs)


def _stored(bridge: Bridge) -> dict[str, Any]:
    (path,) = bridge.token_files()
    data: dict[str, Any] = json.loads(path.read_text())
    return data


async def test_the_entry_codemode_install_writes_starts_the_bridge(portal: RunningPortal, tmp_path: Path) -> None:
    from codemode._cli import main as cli

    url = f"{portal.base}/mcp/httpbin"
    config = tmp_path / "Claude" / "claude_desktop_config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"mcpServers": {"notes": {"command": "/usr/bin/notes-mcp", "args": []}}}))
    assert cli(["install", "claude-desktop", "--connect", url, "--config", str(config)]) == 0
    servers = json.loads(config.read_text())["mcpServers"]
    assert servers["notes"] == {"command": "/usr/bin/notes-mcp", "args": []}  # the other server is kept
    entry = servers["httpbin"]
    assert entry["args"][-2:] == ["connect", url] and Path(entry["command"]).is_absolute()
    bridge = _bridge(portal, tmp_path / "desktop")
    await _works(bridge, entry=entry)  # exactly the command Claude Desktop would start
    assert len(bridge.consents()) == 1 and bridge.token_files()


async def _works(bridge: Bridge, **kwargs: Any) -> None:
    async with bridge.client(**kwargs) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"search", "execute"}
        hits = text(await client.call_tool("search", {"query": "return the request headers"}))
        assert "GET /headers" in hits
        ran = await client.call_tool("execute", {
            "code": "h = api.request_inspection.list_headers()['headers']\nresult = sorted(k.lower() for k in h)"})
        assert not ran.is_error, text(ran)
        assert "authorization" not in json.loads(text(ran))["result"]


async def test_first_use_signs_in_and_a_restart_reuses_the_stored_token(portal: RunningPortal, tmp_path: Path) -> None:
    bridge = _bridge(portal, tmp_path / "desktop")
    await _works(bridge)
    (first,) = bridge.consents()
    assert first["callback"] == 200 and first["login"] == 303
    assert first["scopes"] == ["httpbin:read", "httpbin:write"]  # the person was offered both, could narrow
    (path,) = bridge.token_files()
    assert path.parent == tmp_path / "desktop" / "config" / "codemode" / "connect"  # $XDG_CONFIG_HOME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = _stored(bridge)
    assert stored["server_url"] == bridge.url and stored["tokens"]["refresh_token"].startswith("cmp_rt_")
    client = portal.portal.store.find_client(stored["client"]["client_id"])
    assert client is not None and client.name == "codemode connect"

    await _works(bridge, mode="legacy")  # a new process: the stored token, no consent
    assert len(bridge.consents()) == 1
    assert _stored(bridge)["tokens"]["access_token"] == stored["tokens"]["access_token"]

    await _works(bridge, mode="2026-07-28")  # the 2026 protocol through the bridge as well
    assert len(bridge.consents()) == 1


async def test_expired_and_revoked_tokens_refresh_then_sign_in_again(portal: RunningPortal, tmp_path: Path) -> None:
    bridge = _bridge(portal, tmp_path / "desktop")
    await _works(bridge)
    first = _stored(bridge)

    # the access token is past its end (a bridge restarted after a night): refreshed, no consent
    (path,) = bridge.token_files()
    path.write_text(json.dumps({**first, "expires_at": 1.0}))
    await _works(bridge)
    second = _stored(bridge)
    assert second["tokens"]["access_token"] != first["tokens"]["access_token"]
    assert second["tokens"]["refresh_token"] != first["tokens"]["refresh_token"]  # rotated
    assert len(bridge.consents()) == 1

    # the access token alone is revoked: the portal answers 401, the bridge refreshes, no consent
    r = httpx.post(f"{portal.base}/revoke", data={"token": second["tokens"]["access_token"],
                                                  "client_id": second["client"]["client_id"]})  # fmt: skip
    assert r.status_code == 200
    await _works(bridge)
    third = _stored(bridge)
    assert third["tokens"]["refresh_token"] != second["tokens"]["refresh_token"]
    assert len(bridge.consents()) == 1

    # the whole grant is revoked: the refresh fails, the person is asked again, and it works
    r = httpx.post(f"{portal.base}/revoke", data={"token": third["tokens"]["refresh_token"],
                                                  "client_id": third["client"]["client_id"]})  # fmt: skip
    assert r.status_code == 200
    await _works(bridge)
    assert len(bridge.consents()) == 2
    assert _stored(bridge)["client"]["client_id"] == first["client"]["client_id"]  # same registration


async def test_no_browser_prints_the_address_and_a_denial_is_a_clear_error(
    portal: RunningPortal, tmp_path: Path
) -> None:
    import anyio
    from consent_browser import consent

    bridge = _bridge(portal, tmp_path / "desktop", extra_args=["--no-browser"])
    env = {"CONSENT_USER": "admin", "CONSENT_PASSWORD": portal.password}

    async def person(count: int, decision: str) -> None:
        url = await anyio.to_thread.run_sync(bridge.wait_for_url, count)
        await anyio.to_thread.run_sync(lambda: consent(url, {**env, "CONSENT_DECISION": decision}))

    with pytest.raises(BaseExceptionGroup) as denied:
        async with anyio.create_task_group() as tg:
            tg.start_soon(person, 1, "deny")
            async with bridge.client(mode="legacy"):
                pass
    assert denied.group_contains(MCPError, match="did not authorize this bridge: access_denied")
    assert bridge.consents() == []  # the stand-in browser was not started: --no-browser
    assert not bridge.token_files() or _stored(bridge)["tokens"] is None

    async with anyio.create_task_group() as tg:
        tg.start_soon(person, 2, "approve")
        await _works(bridge, mode="legacy")
    assert _stored(bridge)["tokens"]["access_token"].startswith("cmp_at_")


async def test_a_portal_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    bridge = Bridge(f"http://127.0.0.1:{free_port()}/mcp/httpbin", tmp_path / "desktop")
    with pytest.raises(BaseExceptionGroup) as refused:
        async with bridge.client(mode="legacy", timeout=60):
            pass
    assert refused.group_contains(MCPError, match="cannot reach http://127.0.0.1:")
    assert "Traceback" not in bridge.stderr_path.read_text()


async def test_a_client_id_metadata_document(portal: RunningPortal, tmp_path: Path) -> None:
    docs = MetadataDocuments(tmp_path / "tls")
    try:
        docs.trust_in(portal)
        port = free_port()
        client_id = docs.document("/apps/codemode-connect.json", [f"http://127.0.0.1:{port}/callback"],
                                  client_name="Team codemode connect")  # fmt: skip
        bridge = _bridge(portal, tmp_path / "desktop",
                         extra_args=["--client-metadata-url", client_id, "--callback-port", str(port)])  # fmt: skip
        await _works(bridge)
        assert _stored(bridge)["client"]["client_id"] == client_id
        assert docs.hits and all(c.kind == "cimd" for c in portal.portal.store.list_clients())
        assert bridge.consents()[0]["callback"] == 200
    finally:
        docs.close()


async def test_two_bridges_share_one_file_without_ending_each_others_grant(
    portal: RunningPortal, tmp_path: Path
) -> None:
    """Claude Desktop and Claude Code both running the bridge for one URL: when one refreshes
    (rotating the refresh token), the other adopts the new tokens from the file instead of
    presenting the spent refresh token, which would revoke the grant for both."""
    desktop = _bridge(portal, tmp_path / "shared")
    code = _bridge(portal, tmp_path / "shared")
    async with desktop.client() as a, code.client() as b:
        assert len(desktop.consents()) == 1
        for client in (a, b):
            assert "GET /headers" in text(await client.call_tool("search", {"query": "request headers"}))
        stored = _stored(desktop)
        r = httpx.post(f"{portal.base}/revoke", data={"token": stored["tokens"]["access_token"],
                                                      "client_id": stored["client"]["client_id"]})  # fmt: skip
        assert r.status_code == 200
        for client in (a, b, a, b):  # a refreshes; b adopts a's tokens; both keep working
            ran = await client.call_tool("execute", {"code": "result = api.request_inspection.list_user_agent()"})
            assert not ran.is_error, text(ran)
    assert len(desktop.consents()) == 1  # nobody was sent back to the browser
    grants = [g for g in portal.portal.store.list_grants() if g.revoked_at is None]
    assert len(grants) == 1


def test_login_then_logout_revokes_the_grant(portal: RunningPortal, tmp_path: Path) -> None:
    import subprocess

    bridge = _bridge(portal, tmp_path / "terminal")
    bridge.home.mkdir(parents=True)
    env = {**bridge.env(), "PATH": "/usr/bin:/bin"}
    signed = subprocess.run([str(CODEMODE), "connect", bridge.url, "--login"], env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert "signed in:" in signed.stdout and len(bridge.consents()) == 1
    (path,) = bridge.token_files()
    assert str(path) in signed.stdout
    again = subprocess.run([str(CODEMODE), "connect", bridge.url, "--login"], env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert again.returncode == 0 and len(bridge.consents()) == 1  # the stored token was enough
    assert [g for g in portal.portal.store.list_grants() if g.revoked_at is None]

    out = subprocess.run([str(CODEMODE), "connect", bridge.url, "--logout"], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "the portal revoked the grant" in out.stdout
    assert not path.exists()
    assert not [g for g in portal.portal.store.list_grants() if g.revoked_at is None]
