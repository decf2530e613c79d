"""What the conformance tests share: where the Node tools are, the expected-failure baseline of the
server suite, reading ``-o DIR`` results, and the check that every applicable scenario passed."""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = [
    "AUTH_CONFORMANCE",
    "BASELINE",
    "CONFORMANCE",
    "MUST_PASS",
    "NODE_BIN",
    "SHAPE_ONLY",
    "baseline",
    "check_server_results",
    "scenario_results",
    "tools_missing",
]

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "tests" / "conformance-baseline.yml"
NODE_BIN = ROOT / ".tools" / "node22" / "node_modules" / ".bin"
CONFORMANCE = ROOT / ".tools" / "mcp" / "node_modules" / ".bin" / "conformance"  # 0.1.16: the server suite
AUTH_CONFORMANCE = ROOT / ".tools" / "conformance-auth" / "node_modules" / ".bin" / "conformance"  # 0.2.0-alpha.12

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


def baseline() -> set[str]:
    names, in_server = set(), False
    for line in BASELINE.read_text().splitlines():
        if re.match(r"^\w", line):
            in_server = line.startswith("server:")
        elif in_server and (m := re.match(r"^\s+-\s+([\w-]+)", line)):
            names.add(m.group(1))
    return names


def tools_missing(*tools: Path) -> str | None:
    if not (NODE_BIN / "node").exists() or not all(t.exists() for t in tools or (CONFORMANCE,)):
        return "Node 22 tools not installed: run scripts/setup-node.sh"
    return None


def scenario_results(out: Path, kind: str = "server") -> dict[str, list[dict[str, object]]]:
    """``{scenario: checks}`` from ``-o DIR`` (one ``<kind>-<scenario>-<timestamp>/checks.json`` each)."""
    results: dict[str, list[dict[str, object]]] = {}
    for checks in out.glob("*/checks.json"):
        name = re.sub(rf"^{kind}-|-\d{{4}}-\d{{2}}-\d{{2}}T[\d-]+Z$", "", checks.parent.name)
        results[name] = json.loads(checks.read_text())
    return results


def check_server_results(out: Path, report: str) -> None:
    """Every applicable scenario passed check by check; nothing ran that is neither required nor listed."""
    results = scenario_results(out)
    expected_failures = baseline()
    assert MUST_PASS <= results.keys(), f"scenarios not run: {MUST_PASS - results.keys()}\n{report}"
    for name in sorted(MUST_PASS):
        checks = [c for c in results[name] if c["status"] != "INFO"]
        assert checks, f"{name}: no checks recorded"
        bad = [(c["id"], c["status"], c.get("errorMessage")) for c in checks if c["status"] != "SUCCESS"]
        assert not bad, f"{name} did not pass: {bad}\n{report}"
    unexpected = results.keys() - MUST_PASS - SHAPE_ONLY - expected_failures
    assert not unexpected, f"scenarios neither required nor in {BASELINE.name}: {sorted(unexpected)}"
    for name in expected_failures & results.keys():
        assert any(c["status"] == "FAILURE" for c in results[name]), f"{name} passed: remove it from the baseline"
