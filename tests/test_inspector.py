"""MCP Inspector CLI smoke test over stdio (``@modelcontextprotocol/inspector`` from ``.tools/``, Node 22)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parent.parent
CODEMODE = str(Path(sys.executable).with_name("codemode"))
NODE_BIN = ROOT / ".tools" / "node22" / "node_modules" / ".bin"
INSPECTOR = ROOT / ".tools" / "mcp" / "node_modules" / ".bin" / "mcp-inspector"
MISSING = not (NODE_BIN / "node").exists() or not INSPECTOR.exists()

skip_without_tools = pytest.mark.skipif(MISSING, reason="Node 22 tools not installed: run scripts/setup-node.sh")


def inspector(*method_args: str) -> dict[str, object]:
    """``mcp-inspector --cli codemode serve petstore <method_args> --format json``, parsed."""
    env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(INSPECTOR), "--cli", CODEMODE, "serve", "specs/petstore3-openapi.yaml", *method_args]
    run = subprocess.run([*command, "--format", "json"], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert run.returncode == 0, f"inspector exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    return json.loads(run.stdout)  # type: ignore[no-any-return]


@skip_without_tools
def test_inspector_lists_exactly_two_tools() -> None:
    listed = inspector("--method", "tools/list")["result"]
    assert isinstance(listed, dict)
    tools = listed["tools"]
    assert [t["name"] for t in tools] == ["search", "execute"]


@skip_without_tools
def test_inspector_calls_search() -> None:
    called = inspector(
        "--method", "tools/call", "--tool-name", "search", "--tool-args-json", '{"query":"find pets by status"}'
    )
    result = called["result"]
    assert isinstance(result, dict)
    assert not result.get("isError")
    text = "\n".join(c["text"] for c in result["content"] if c["type"] == "text")
    assert "GET /pet/findByStatus" in text
