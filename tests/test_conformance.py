"""The official MCP conformance suite against ``codemode serve --transport http``.

Runs ``@modelcontextprotocol/conformance`` (installed in ``.tools/`` by ``scripts/setup-node.sh``, with
Node 22) over every server scenario with ``tests/conformance-baseline.yml`` as the expected failures, and
then reads the per-scenario ``checks.json`` to require that each scenario that applies to a real
two-tool server really passed, check by check, rather than trusting the exit code alone.
"""

from __future__ import annotations

import os
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
from conformance_kit import BASELINE, CONFORMANCE, NODE_BIN, check_server_results, tools_missing

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parent.parent
CODEMODE = str(Path(sys.executable).with_name("codemode"))
PETSTORE = str(ROOT / "specs" / "petstore3-openapi.yaml")
READY_TIMEOUT = 60.0


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


@pytest.mark.skipif(tools_missing() is not None, reason=tools_missing() or "")
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
        check_server_results(out, report)
