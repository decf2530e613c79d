"""Portal figures: the token check on every MCP request (SQLite and PostgreSQL), and ``search``
calls per second through a running portal with 20 concurrent authenticated clients.

1. **Token check.** The real app (``build_portal``) with its MCP handler replaced by a stub that
   answers 204 at once, called in-process as ASGI: what is timed is everything the portal adds
   to an MCP request (routing, header parsing, SHA-256 of the token, the store lookup joined with
   its grant on a worker thread, the audience/expiry/scope checks, the caller). The bare store
   lookup (``find_token`` through ``AsyncStore``) is reported on its own. SQLite is the embedded
   file database (WAL); PostgreSQL a throwaway 15 cluster on loopback (``tests/postgres.py``).
2. **search through the portal.** ``codemode portal`` as its own process on the bundled petstore
   spec; 20 MCP client sessions (official SDK, streamable HTTP, each with its own access token
   from the real OAuth flow) call ``search`` in a loop for a fixed time. Calls per second,
   latency p50/p99 and errors. The load generator shares the machine (2 cores here).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PETSTORE = ROOT / "specs" / "petstore3-openapi.yaml"
CODEMODE = str(Path(sys.executable).with_name("codemode"))
QUERIES = ["find pets by status", "add a new pet", "place an order for a pet", "delete a user", "log in",
           "upload an image of a pet", "inventory by status", "update an existing pet"]  # fmt: skip
CLIENTS = 20


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


# == 1. the token check =========================================================================
def _config(tmp: Path, database_url: str | None) -> Path:
    db = f'database_url = "{database_url}"\n' if database_url else ""
    path = tmp / "portal.toml"
    path.write_text(f'[portal]\nport = 8999\ndata_dir = "data"\n{db}\n[servers.petstore]\nspec = "{PETSTORE}"\n'
                    'base_url = "http://127.0.0.1:9/api/v3"\n')  # fmt: skip
    return path


def _token_for(portal: Any) -> str:
    from codemode_portal._crypto import new_id
    from codemode_portal._oauth._grants import issue_tokens
    from codemode_portal._store import Grant

    store, settings = portal.store, portal.config.settings
    user = store.find_user("admin")
    grant = Grant(id=new_id(), user_id=user.id, client_id="bench-client", server="petstore",
                  resource=settings.resource_url("petstore"), scopes=("petstore:read",),
                  created_at=time.time())  # fmt: skip
    store.create_grant(grant)
    body, records = issue_tokens(portal.oauth.ctx, grant, grant.scopes, refresh=False, refresh_scopes=grant.scopes)
    store.save_tokens(*records)
    return str(body["access_token"])


class _Stub:
    """Stands in for the MCP server: answers 204 at once, so only the portal's own work is timed."""

    def open_sessions(self, subject: str) -> int:  # the per-user session limit asks
        return 0

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _time_requests(portal: Any, token: str, n: int) -> tuple[list[float], list[float]]:
    from codemode_portal._crypto import token_hash

    app = portal.app
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/mcp/petstore", "raw_path": b"/mcp/petstore", "query_string": b"", "root_path": "",
        "server": ("127.0.0.1", 8999), "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"127.0.0.1:8999"), (b"authorization", f"Bearer {token}".encode()),
                    (b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream")],
    }  # fmt: skip
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    full, lookup = [], []
    astore, digest = portal.web.astore, token_hash(token)
    for i in range(n + n // 10):  # the first tenth warms up
        t0 = time.perf_counter()
        await app(dict(scope), receive, send)  # Starlette's routing writes into the scope
        t1 = time.perf_counter()
        await astore.call(astore.store.find_token, digest)
        t2 = time.perf_counter()
        if i >= n // 10:
            full.append((t1 - t0) * 1000)
            lookup.append((t2 - t1) * 1000)
    assert set(statuses) == {204}, f"the token was not accepted: {statuses[:5]} {statuses.count(404)}"
    return full, lookup


def token_check(database_url: str | None, n: int) -> dict[str, float]:
    import anyio
    from codemode_portal import load_portal_config
    from codemode_portal._app import build_portal

    with tempfile.TemporaryDirectory(prefix="bench-portal-") as tmp:
        portal = build_portal(load_portal_config(_config(Path(tmp), database_url)), env={})
        try:
            portal.hosted["petstore"].http = _Stub()  # type: ignore[assignment]
            token = _token_for(portal)
            full, lookup = anyio.run(_time_requests, portal, token, n)
        finally:
            portal.store.close()
    return {"p50": _pct(full, 0.5), "p99": _pct(full, 0.99), "lookup_p50": _pct(lookup, 0.5),
            "lookup_p99": _pct(lookup, 0.99), "n": float(n)}  # fmt: skip


def postgres_token_check(n: int) -> dict[str, float] | str:
    try:
        import psycopg  # noqa: F401
        from postgres import postgres_cluster
    except ImportError as exc:
        return f"n/a ({exc.name} missing: scripts/setup-postgres.sh)"
    if not Path("/usr/lib/postgresql/15/bin/initdb").exists() and not os.environ.get("CODEMODE_PG_BIN"):
        return "n/a (PostgreSQL 15 not installed: scripts/setup-postgres.sh)"
    with postgres_cluster() as cluster:
        return token_check(cluster.url, n)


# == 2. search through a running portal =========================================================
@contextmanager
def running_portal_process(tmp: Path) -> Generator[tuple[str, str], None, None]:
    """``codemode portal`` in its own process; yields (base URL, admin password)."""
    import httpx
    from upstreams import free_port

    port = free_port()
    config = _config(tmp, None)
    log = tmp / "portal.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CODEMODE, "portal", "--config", str(config), "--port", str(port)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the portal exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the portal did not start")
            time.sleep(0.2)
        banner = log.read_text()
        found = re.search(r"with password (\S+)", banner) or re.search(r"its password is in (\S+)", banner)
        assert found, banner
        password = found.group(1)
        if "password is in" in found.group(0):  # written to a file readable by the operator only
            password = Path(password).read_text().strip()
        yield base, password
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _tokens(base: str, password: str, count: int) -> list[str]:
    """Access tokens from the real flow: one registered client, ``count`` grants (sign-in, consent)."""
    from portal_harness import Flow, RunningPortal

    stand_in = RunningPortal(base, None, password)  # type: ignore[arg-type]
    with Flow(stand_in) as flow:
        flow.register(client_name="bench")
        return [flow.tokens(scope="petstore:read")["access_token"] for _ in range(count)]


async def _search_load(base: str, tokens: list[str], seconds: float, path: str = "/mcp/petstore") -> dict[str, Any]:
    import httpx2
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    latencies: list[float] = []
    errors: list[str] = []
    start, all_ready = asyncio.Event(), asyncio.Event()
    ready: list[int] = []
    stop_at: list[float] = []

    async def client(i: int, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            async with streamable_http_client(f"{base}{path}", http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    for _ in range(600):  # warm: until search ranks with its semantic index too
                        warm = await session.call_tool("search", {"query": QUERIES[i % len(QUERIES)]})
                        if "still being prepared" not in str(warm.content):
                            break
                        await asyncio.sleep(0.2)
                    ready.append(i)
                    if len(ready) == len(tokens):
                        all_ready.set()
                    await start.wait()
                    n = i
                    while time.perf_counter() < stop_at[0]:
                        n += 1
                        t0 = time.perf_counter()
                        try:
                            result = await session.call_tool("search", {"query": QUERIES[n % len(QUERIES)]})
                            if result.is_error:
                                errors.append("isError")
                        except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                            errors.append(type(exc).__name__)
                        latencies.append((time.perf_counter() - t0) * 1000)

    tasks = [asyncio.create_task(client(i, t)) for i, t in enumerate(tokens)]
    waiting = asyncio.create_task(all_ready.wait())
    await asyncio.wait([waiting, *tasks], timeout=120, return_when=asyncio.FIRST_COMPLETED)
    if not all_ready.is_set():  # a session failed to open: report it, do not measure
        waiting.cancel()
        for t in tasks:
            t.cancel()
        failed = [t.exception() for t in tasks if t.done() and not t.cancelled()]
        raise RuntimeError(f"only {len(ready)} of {len(tokens)} sessions opened: {failed[:1]}")
    stop_at.append(time.perf_counter() + seconds)
    began = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    return {"calls": len(latencies), "per_second": len(latencies) / elapsed, "p50": _pct(latencies, 0.5),
            "p99": _pct(latencies, 0.99), "errors": len(errors), "error_kinds": sorted(set(errors)),
            "seconds": elapsed, "clients": len(tokens)}  # fmt: skip


@contextmanager
def plain_server_process(tmp: Path) -> Generator[str, None, None]:
    """``codemode serve`` (no portal, no OAuth) on the same spec: the baseline."""
    import httpx
    from upstreams import free_port

    port = free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CODEMODE, "serve", str(PETSTORE), "--transport", "http", "--port", str(port)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"codemode serve exited: {log.read_text()[-2000:]}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=2, trust_env=False)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("codemode serve did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def search_without_portal(seconds: float, clients: int = CLIENTS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-serve-load-") as tmp, plain_server_process(Path(tmp)) as base:
        return asyncio.run(_search_load(base, [""] * clients, seconds, path="/mcp"))


def search_through_portal(seconds: float, clients: int = CLIENTS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-portal-load-") as tmp, running_portal_process(Path(tmp)) as (
        base, password,
    ):  # fmt: skip
        tokens = _tokens(base, password, clients)
        assert len(set(tokens)) == clients
        return asyncio.run(_search_load(base, tokens, seconds))


def measure(quick: bool = False) -> dict[str, Any]:
    n = 300 if quick else 3000
    load_before = os.getloadavg()[0]
    result: dict[str, Any] = {"n": n, "load_before": load_before}
    result["sqlite"] = token_check(None, n)
    result["postgresql"] = postgres_token_check(n)
    result["search"] = search_through_portal(5 if quick else 20)
    result["search_plain"] = search_without_portal(5 if quick else 20)
    result["load_after"] = os.getloadavg()[0]
    result["nonce"] = secrets.token_hex(2)
    return result


def table(m: dict[str, Any]) -> str:
    def row(name: str, r: dict[str, float] | str) -> list[str]:
        if isinstance(r, str):
            return [f"| {name}: portal layer per MCP request, p50 / p99 | {r} |"]
        return [
            f"| {name}: portal layer per MCP request (routing + token lookup + checks), p50 / p99 "
            f"| {r['p50']:.3f} / {r['p99']:.3f} ms |",
            f"| {name}: of which the token lookup (store, worker thread), p50 / p99 "
            f"| {r['lookup_p50']:.3f} / {r['lookup_p99']:.3f} ms |",
        ]

    s = m["search"]
    lines = ["| portal (measured here) | value |", "|---|---|"]
    lines += row("SQLite", m["sqlite"]) + row("PostgreSQL 15", m["postgresql"])
    lines += [
        f"| `search` through the portal, {s['clients']} concurrent authenticated clients, calls/s "
        f"| {s['per_second']:.0f} ({s['calls']} calls in {s['seconds']:.0f} s) |",
        f"| `search` latency under that load, p50 / p99 | {s['p50']:.1f} / {s['p99']:.1f} ms |",
        f"| errors | {s['errors']}{' (' + ', '.join(s['error_kinds']) + ')' if s['error_kinds'] else ''} |",
    ]
    if "search_plain" in m:
        b = m["search_plain"]
        lines.append(f"| baseline: the same load on `codemode serve` (no portal, no OAuth), calls/s, p50 / p99 "
                     f"| {b['per_second']:.0f}, {b['p50']:.1f} / {b['p99']:.1f} ms, {b['errors']} errors |")
    lines += [
        f"| load average (1 min) before / after | {m['load_before']:.2f} / {m['load_after']:.2f} |",
    ]
    note = f"_{m['n']} sequential requests per backend; the load generator runs beside the portal._"
    return "\n".join(lines) + "\n\n" + note


if __name__ == "__main__":
    print(table(measure(quick="--quick" in sys.argv)))
