"""execute figures: isolate overhead, per-call host overhead, a 50-call script, RSS over 1,000 runs.

Runs the real server pieces (WasmSandbox, Executor, HttpxUpstream) against a loopback
upstream in a separate process. Prints a markdown table; ``measure()`` returns the numbers.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from codemode import load_spec
from codemode._client import bind_arguments
from codemode._execute import Executor
from codemode._request import build_request
from codemode._sandbox import WasmSandbox
from codemode._settings import ExecuteSettings
from codemode._upstream import AuditEvent, HttpxUpstream, UpstreamSettings

UPSTREAM = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
PET = json.dumps({"id": 7, "name": "Rex", "photoUrls": [], "status": "available"}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(PET)).encode() + b"\r\n\r\n" + PET)  # one write: no Nagle/delayed-ACK stall
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.wfile.write(RESPONSE)
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H); print(s.server_port, flush=True); s.serve_forever()
"""

# Published start-up figures of alternatives (NOT measured here).
PUBLISHED = [
    ("Docker container (published)", "~195 ms"),
    ("Pyodide in Node/Deno (published, mcp-run-python)", "~2.8 s"),
    ("WASI CPython, plain module (published)", "~66 ms"),
    ("Monty, in-process interpreter, not isolated (published)", "~0.06 ms"),
]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _run(runs: int, executions: int) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-c", UPSTREAM], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    try:
        spec = load_spec(str(ROOT / "specs" / "petstore3-openapi.yaml"))
        events: list[AuditEvent] = []
        upstream = HttpxUpstream(UpstreamSettings(base_url=f"http://127.0.0.1:{port}"), audit_hooks=(events.append,))
        sandbox = WasmSandbox()
        sandbox.prepare()
        ex = Executor(spec, sandbox, upstream, ExecuteSettings(max_calls=1000),
                      base_url=f"http://127.0.0.1:{port}")  # fmt: skip
        out: dict[str, Any] = {}
        # 1. isolate overhead through the executor (policy check + fresh isolate), no API call
        trivial = []
        for _ in range(runs):
            t = time.perf_counter()
            await ex.execute("result = 1")
            trivial.append((time.perf_counter() - t) * 1000)
        out["execute_trivial_p50_ms"] = _pct(trivial, 0.5)
        out["execute_trivial_p99_ms"] = _pct(trivial, 0.99)
        # 2. per-call host overhead: (script time - trivial time - upstream time) / calls
        n = 50
        code = f"for i in range({n}):\n    api.pet.get_by_id(7)\nresult = {n}"
        totals, overheads = [], []
        for _ in range(max(5, runs // 20)):
            events.clear()
            t = time.perf_counter()
            report = await ex.execute(code)
            total = (time.perf_counter() - t) * 1000
            assert report.ok, report
            upstream_ms = sum(e.elapsed_ms for e in events)
            totals.append(total)
            overheads.append((total - out["execute_trivial_p50_ms"] - upstream_ms) / n)
        out["script_50_calls_p50_ms"] = statistics.median(totals)
        out["per_call_overhead_p50_ms"] = statistics.median(overheads)
        # 3. host-only work per call (bind + validate + build request), no network
        op = spec.operation("pet.add")
        assert op is not None
        t = time.perf_counter()
        reps = 2000
        for _ in range(reps):
            bound = bind_arguments(op, [], {"name": "Rex", "photoUrls": ["u"], "status": "sold"})
            build_request(spec, op, bound, base_url="http://127.0.0.1:1")
        out["bind_validate_build_us"] = (time.perf_counter() - t) / reps * 1e6
        # 4. RSS over many executions
        out["rss_start_mb"] = _rss_mb()
        marks = []
        for i in range(executions):
            await ex.execute("x = [i * i for i in range(1000)]\nresult = len(x)")
            if (i + 1) % (executions // 4) == 0:
                marks.append(round(_rss_mb(), 1))
        out["rss_marks_mb"] = marks
        await upstream.aclose()
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def measure(runs: int = 200, executions: int = 1000) -> dict[str, Any]:
    return asyncio.run(_run(runs, executions))


def table(m: dict[str, Any]) -> str:
    rows = [
        ("execute, trivial code (policy check + fresh isolate), p50 / p99",
         f"{m['execute_trivial_p50_ms']:.2f} / {m['execute_trivial_p99_ms']:.2f} ms"),
        ("per-API-call host overhead vs loopback upstream, upstream time subtracted, p50",
         f"{m['per_call_overhead_p50_ms']:.3f} ms"),
        ("  of which bind + validate + build request (host only)", f"{m['bind_validate_build_us']:.0f} µs"),
        ("script of 50 API calls against a loopback upstream, total p50", f"{m['script_50_calls_p50_ms']:.1f} ms"),
        (f"process RSS at start, then after each quarter of {len(m['rss_marks_mb']) and 1000} executions",
         f"{m['rss_start_mb']:.1f} MB → {' → '.join(str(x) for x in m['rss_marks_mb'])} MB"),
    ]  # fmt: skip
    lines = ["| execute (measured here) | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    lines += ["", "| alternatives: start-up (published, not measured here) | figure |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in PUBLISHED]
    return "\n".join(lines)


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    result = measure(runs=50 if quick else 300, executions=200 if quick else 1000)
    print(table(result))
    if "--json" in sys.argv:
        print(json.dumps(result))
