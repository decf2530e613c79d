"""The official MCP conformance suite against the portal.

1. ``conformance authorization`` (``@modelcontextprotocol/conformance`` 0.2.0-alpha.12, in
   ``.tools/conformance-auth``) against the portal's issuer: ``authorization-server-metadata-endpoint``
   and ``authorization-code-grant`` (PKCE S256, ``state``, exact loopback redirect, ``iss``, token
   response with ``Cache-Control: no-store``). The suite prints an authorization URL and waits for
   its callback; the test signs in and consents through the portal's own forms, then hands the
   browser's redirect to the suite's callback server, as a person's browser would.
2. The server scenarios of the first issue (0.1.16, ``tests/conformance-baseline.yml``) against a
   server hosted *by the portal*, with a pre-issued access token: the suite has no way to send a
   token, so a small proxy on loopback adds ``Authorization: Bearer …`` to each request (Host and
   Origin passed through unchanged, so the DNS-rebinding scenario still tests the portal).
"""

from __future__ import annotations

import os
import queue
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytest.importorskip("sqlalchemy", reason="the portal extra is not installed: pip install -e '.[portal]'")

from conformance_kit import (
    AUTH_CONFORMANCE,
    BASELINE,
    CONFORMANCE,
    NODE_BIN,
    check_server_results,
    scenario_results,
    tools_missing,
)
from portal_harness import PETSTORE, Flow, RunningPortal, running_portal
from upstreams import free_port

pytestmark = pytest.mark.node

SERVERS = f"""
[servers.petstore]
spec = "{PETSTORE}"
base_url = "http://127.0.0.1:9/api/v3"
"""
AUTH_SCENARIOS = ("authorization-server-metadata-endpoint", "authorization-code-grant")


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPortal]:
    with running_portal(tmp_path_factory.mktemp("conformance"), SERVERS) as running:
        yield running


@pytest.mark.skipif(tools_missing(AUTH_CONFORMANCE) is not None, reason=tools_missing(AUTH_CONFORMANCE) or "")
def test_authorization_server_scenarios_pass(portal: RunningPortal, tmp_path: Path) -> None:
    port = free_port()
    resource = f"{portal.base}/mcp/petstore"
    with Flow(portal, redirect_uri=f"http://127.0.0.1:{port}/callback") as person:
        person.register(client_name="MCP conformance suite")
        out = tmp_path / "results"
        argv = [str(AUTH_CONFORMANCE), "authorization", "--url", portal.base, "--client-id", person.client_id,
                "--resource", resource, "-p", str(port), "-o", str(out)]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                                stdin=subprocess.DEVNULL)  # fmt: skip
        lines: queue.Queue[str] = queue.Queue()
        seen: list[str] = []

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            url = None
            deadline = time.monotonic() + 120
            while url is None:
                try:
                    line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    pytest.fail("the suite never printed an authorization URL:\n" + "".join(seen))
                seen.append(line)
                if line.startswith(f"{portal.base}/authorize?"):
                    url = line.strip()
            # a person: signs in, sees the consent page, approves
            person.login()
            consent = person.browser.get(url)
            assert consent.status_code == 200, consent.text[:500]
            assert "MCP conformance suite" in consent.text
            answer = person.decide(consent)
            assert answer.status_code == 302
            callback = answer.headers["location"]
            assert callback.startswith(f"http://127.0.0.1:{port}/callback?")
            # the browser follows the redirect to the suite's callback server (it may still be starting)
            with httpx.Client(trust_env=False, timeout=30) as browser:
                for _ in range(100):
                    try:
                        assert browser.get(callback).status_code == 200
                        break
                    except httpx.ConnectError:
                        time.sleep(0.1)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            reader.join(5)
            if proc.stdout is not None:
                proc.stdout.close()
        while not lines.empty():
            seen.append(lines.get())
    report = f"exit {proc.returncode}\n" + "".join(seen)[-6000:]
    assert proc.returncode == 0, report
    results = scenario_results(out, kind="authorization-server")
    assert set(AUTH_SCENARIOS) <= results.keys(), report
    for name in AUTH_SCENARIOS:
        checks = results[name]
        assert checks and all(c["status"] == "SUCCESS" for c in checks), (name, checks)


# -- the server scenarios through the portal, with a pre-issued token --------------------------
def _token_proxy_app(upstream: str, token: str):  # type: ignore[no-untyped-def]
    """An ASGI app forwarding every request to ``upstream`` with the bearer token added, streaming
    the answer back (SSE streams included). Host and Origin go through untouched."""
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import StreamingResponse

    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(60, read=None), trust_env=False)

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        request = Request(scope, receive)
        body = await request.body()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in ("content-length", "authorization")]
        headers.append(("authorization", f"Bearer {token}"))
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        upstream_request = client.build_request(request.method, path, headers=headers, content=body)
        response = await client.send(upstream_request, stream=True)

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in response.aiter_raw():
                yield chunk

        kept = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "transfer-encoding")}
        await StreamingResponse(chunks(), status_code=response.status_code, headers=kept,
                                background=BackgroundTask(response.aclose))(scope, receive, send)  # fmt: skip

    return app


@contextmanager
def token_proxy(upstream: str, token: str) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_token_proxy_app(upstream, token), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, name="token-proxy", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the token proxy did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.mark.skipif(tools_missing(CONFORMANCE) is not None, reason=tools_missing(CONFORMANCE) or "")
def test_server_scenarios_pass_through_the_portal_with_a_pre_issued_token(portal: RunningPortal) -> None:
    with Flow(portal) as flow:
        flow.register()
        token = flow.tokens(scope="petstore:read")["access_token"]
    with token_proxy(portal.base, token) as proxy, tempfile.TemporaryDirectory(prefix="codemode-conf-") as tmp:
        out = Path(tmp) / "results"
        with httpx.Client(trust_env=False) as http:  # the proxy really adds the token; without it: 401
            assert http.post(f"{portal.base}/mcp/petstore", json={}).status_code == 401
        run = subprocess.run(
            [str(CONFORMANCE), "server", "--url", f"{proxy}/mcp/petstore", "--suite", "all",
             "--expected-failures", str(BASELINE), "-o", str(out)],
            env=_env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        report = f"conformance exit {run.returncode}\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
        assert run.returncode == 0, report
        check_server_results(out, report)
    portal.portal.audit.flush()
    assert any(r.event == "token_issued" for r in portal.portal.store.list_audit())
