"""A hostile upstream on loopback (``tests/faulty_upstream.py``), through the whole server and the real
isolate: each fault is a catchable ``ApiError`` with a clear message, no execute outlives its
deadline, no request leaves after it, memory stays bounded, and a redirect is never followed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faulty_upstream import FaultyUpstream, faulty_upstream
from mcp import Client

from codemode import load_spec
from codemode._sandbox import SandboxLimits, WasmSandbox
from codemode._server import CodemodeServer
from codemode._settings import ExecuteSettings, ServerSettings
from codemode._upstream_types import UpstreamSettings

PATHS = ("/stall", "/reset", "/truncated", "/huge", "/huge-declared", "/bad-json", "/burst", "/retry-after",
         "/redirect", "/ok")  # fmt: skip
CATCH = """
try:
    result = {{"value": api.call("GET {path}")}}
except ApiError as e:
    result = {{"status": e.status, "message": str(e), "body": e.body}}
"""


@pytest.fixture(scope="module")
def wasm() -> WasmSandbox:
    box = WasmSandbox()
    box.prepare()
    return box


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "faults.json"
    operations = {
        p: {"get": {"operationId": p.strip("/").replace("-", "_"), "responses": {"200": {"description": "ok"}}}}
        for p in PATHS
    }
    path.write_text(json.dumps({"openapi": "3.0.3", "info": {"title": "Faults", "version": "1"}, "paths": operations}))
    return path


@pytest.fixture
def upstream() -> Iterator[FaultyUpstream]:
    with faulty_upstream() as server:
        yield server


def server_for(spec_path: Path, wasm: WasmSandbox, base_url: str, *, timeout: float = 5, **upstream: Any) -> Any:
    settings = ServerSettings(
        execute=ExecuteSettings(limits=SandboxLimits(timeout_seconds=timeout)),
        upstream=UpstreamSettings(base_url=base_url, **upstream),
    )
    return CodemodeServer(load_spec(str(spec_path)), settings, sandbox=wasm, env={})


async def call(server: CodemodeServer, path: str) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    async with Client(server.mcp) as client:
        result = await client.call_tool("execute", {"code": CATCH.format(path=path)})
    text = result.content[0].text  # type: ignore[union-attr]
    assert not result.is_error, text  # every fault is catchable
    return json.loads(text)["result"], time.monotonic() - started


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/stall", None, "/stall: no response within timeout_seconds=1"),
        ("/reset", None, "cannot reach 127.0.0.1"),
        ("/truncated", None, "the response could not be read"),
        ("/huge-declared", 200, "larger than max_response_bytes=5000000 (Content-Length is 1073741824)"),
        ("/bad-json", 200, "not valid JSON although its Content-Type is application/json"),
    ],
)
async def test_each_fault_is_a_catchable_api_error(
    spec_path: Path, wasm: WasmSandbox, upstream: FaultyUpstream, path: str, status: int | None, fragment: str
) -> None:
    server = server_for(spec_path, wasm, upstream.base_url, timeout_seconds=1, max_retries=0)
    out, took = await call(server, path)
    assert out.get("status") == status and fragment in out["message"], out
    assert took < 5, took
    if path == "/bad-json":
        assert out["body"] == '{"items": [1, 2,, "not json'  # the text is kept for the model to look at


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def test_a_gigabyte_body_is_refused_with_bounded_memory(
    spec_path: Path, wasm: WasmSandbox, upstream: FaultyUpstream
) -> None:
    server = server_for(spec_path, wasm, upstream.base_url)
    if not _peak_rss_reset():
        pytest.skip("cannot reset the peak RSS counter (/proc/self/clear_refs)")
    before = _peak_rss_mb()
    out, took = await call(server, "/huge")
    assert "larger than max_response_bytes=5000000 (stopped reading after" in out["message"], out
    assert _peak_rss_mb() - before < 200, (before, _peak_rss_mb())  # never the whole gigabyte
    assert upstream.sent_bytes.get("/huge", 0) < 1 << 29 and took < 5


async def test_a_burst_of_5xx_is_retried_then_reported(spec_path: Path, wasm: WasmSandbox) -> None:
    retries = {"max_retries": 2, "max_retry_wait_seconds": 0.2}
    with faulty_upstream(burst=2) as up:
        out, _ = await call(server_for(spec_path, wasm, up.base_url, **retries), "/burst")
        assert out == {"value": {"ok": True}} and len(up.hits("/burst")) == 3
    with faulty_upstream(burst=10) as up:
        out, _ = await call(server_for(spec_path, wasm, up.base_url, **retries), "/burst")
        assert out["status"] == 503 and "failed with HTTP 503" in out["message"] and len(up.hits("/burst")) == 3


async def test_no_request_leaves_after_the_run_deadline(spec_path: Path, wasm: WasmSandbox) -> None:
    """Retry-After: 1 with room for ten retries, under a 2.5 s run: retries stop at the deadline."""
    with faulty_upstream() as up:
        server = server_for(spec_path, wasm, up.base_url, timeout=2.5, max_retries=10, max_retry_wait_seconds=5)
        started = time.monotonic()
        out, took = await call(server, "/retry-after")
        deadline = started + 2.5
        time.sleep(1.5)  # anything still scheduled would arrive by now
        arrivals = up.hits("/retry-after")
    assert out["status"] == 503, out
    assert len(arrivals) >= 2 and all(at <= deadline for at in arrivals), [round(a - started, 2) for a in arrivals]
    assert took < 2.5 + 2


async def test_a_stalled_upstream_never_outlives_the_run(
    spec_path: Path, wasm: WasmSandbox, upstream: FaultyUpstream
) -> None:
    server = server_for(spec_path, wasm, upstream.base_url, timeout=2)  # the upstream's own timeout is 30 s
    started = time.monotonic()
    async with Client(server.mcp) as client:
        result = await client.call_tool("execute", {"code": CATCH.format(path="/stall")})
    took = time.monotonic() - started
    text = result.content[0].text  # type: ignore[union-attr]
    # whichever fires first (the bridge's wait, or the upstream's attempt cut to the run's deadline)
    assert ("timeout_seconds=2" in text or "before the execution's deadline" in text) and took < 2 + 2, (took, text)
    assert "timeout_seconds=30" not in text  # never the upstream's own timeout, which did not apply


async def test_a_redirect_to_another_host_is_not_followed_and_its_location_stays_out(
    spec_path: Path, wasm: WasmSandbox
) -> None:
    with faulty_upstream() as elsewhere:
        target = f"{elsewhere.base_url}/ok?token=where-it-points"
        with faulty_upstream(redirect_to=target) as up:
            server = server_for(spec_path, wasm, up.base_url, headers={"X-Api-Key": "sk-live-0123456789"})
            out, _ = await call(server, "/redirect")
        assert elsewhere.arrivals == []  # the other host saw nothing (nor the key)
    assert out["status"] == 302 and "a redirect, which is not followed" in out["message"], out
    assert "where-it-points" not in json.dumps(out) and elsewhere.base_url not in json.dumps(out)
