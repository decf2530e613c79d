"""The official MCP conformance suite against ``codemode serve --transport http``.

Runs ``@modelcontextprotocol/conformance`` (installed in ``.tools/`` by ``scripts/setup-node.sh``, with
Node 22) over every server scenario with ``tests/conformance-baseline.yml`` as the expected failures, and
then reads the per-scenario ``checks.json`` to require that each scenario that applies to a real
two-tool server really passed, check by check, rather than trusting the exit code alone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parent.parent
CODEMODE = str(Path(sys.executable).with_name("codemode"))
PETSTORE = str(ROOT / "specs" / "petstore3-openapi.yaml")
BASELINE = ROOT / "tests" / "conformance-baseline.yml"
NODE_BIN = ROOT / ".tools" / "node22" / "node_modules" / ".bin"
CONFORMANCE = ROOT / ".tools" / "mcp" / "node_modules" / ".bin" / "conformance"
READY_TIMEOUT = 60.0

# Scenarios that apply to a real server with two tools and nothing else: every check must be SUCCESS.
MUST_PASS = {
    "server-initialize",
    "ping",
    "logging-set-level",
    "tools-list",
    "resources-list",  # an empty list, well formed
    "prompts-list",  # an empty list, well formed
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
}
# These "pass" only on the shape of the answer: they call fixture tools (test_simple_text,
# test_error_handling) that this server does not have, and accept its isError result as well formed.
SHAPE_ONLY = {"tools-call-simple-text", "tools-call-error"}


def _baseline() -> set[str]:
    names, in_server = set(), False
    for line in BASELINE.read_text().splitlines():
        if re.match(r"^\w", line):
            in_server = line.startswith("server:")
        elif in_server and (m := re.match(r"^\s+-\s+([\w-]+)", line)):
            names.add(m.group(1))
    return names


def _tools_missing() -> str | None:
    if not (NODE_BIN / "node").exists() or not CONFORMANCE.exists():
        return "Node 22 tools not installed: run scripts/setup-node.sh"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _http_server(tmp: Path) -> Iterator[tuple[str, Path]]:
    port = _free_port()
    stderr_path = tmp / "server-stderr.txt"
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [CODEMODE, "serve", PETSTORE, "--transport", "http", "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"codemode serve exited with {proc.returncode}:\n{stderr_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"codemode serve did not listen on port {port}:\n{stderr_path.read_text()}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", stderr_path
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _scenario_results(out: Path) -> dict[str, list[dict[str, object]]]:
    """``{scenario: checks}`` from ``-o DIR`` (one ``server-<scenario>-<timestamp>/checks.json`` each)."""
    results: dict[str, list[dict[str, object]]] = {}
    for checks in out.glob("*/checks.json"):
        name = re.sub(r"^server-|-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", checks.parent.name)
        results[name] = json.loads(checks.read_text())
    return results


@pytest.mark.skipif(_tools_missing() is not None, reason=_tools_missing() or "")
def test_conformance_suite() -> None:
    with tempfile.TemporaryDirectory(prefix="codemode-conformance-") as tmp_name:
        tmp = Path(tmp_name)
        out = tmp / "results"
        with _http_server(tmp) as (url, stderr_path):
            env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
            run = subprocess.run(
                [str(CONFORMANCE), "server", "--url", url, "--suite", "all",
                 "--expected-failures", str(BASELINE), "-o", str(out)],
                env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            server_log = stderr_path.read_text()
        report = f"conformance exit {run.returncode}\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}\nserver:\n{server_log}"
        assert run.returncode == 0, report

        results = _scenario_results(out)
        baseline = _baseline()
        assert MUST_PASS <= results.keys(), f"scenarios not run: {MUST_PASS - results.keys()}\n{report}"
        for name in sorted(MUST_PASS):
            checks = [c for c in results[name] if c["status"] != "INFO"]
            assert checks, f"{name}: no checks recorded"
            bad = [(c["id"], c["status"], c.get("errorMessage")) for c in checks if c["status"] != "SUCCESS"]
            assert not bad, f"{name} did not pass: {bad}"
        # Nothing unaccounted for: every scenario the suite ran is must-pass, shape-only, or a listed failure.
        unexpected = results.keys() - MUST_PASS - SHAPE_ONLY - baseline
        assert not unexpected, f"scenarios neither required nor in {BASELINE.name}: {sorted(unexpected)}"
        # The baseline names only scenarios that really failed (the suite also fails a stale baseline).
        for name in baseline & results.keys():
            assert any(c["status"] == "FAILURE" for c in results[name]), f"{name} passed: remove it from the baseline"
