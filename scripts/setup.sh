#!/usr/bin/env bash
# Set up codemode-mcp in .venv: the package, its dev tools, and the compiled wasm isolate.
# Idempotent. Needs Python >= 3.11 (python3 on PATH, or PYTHON=...).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"

"$python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"codemode-mcp needs Python >= 3.11; {sys.executable} is {sys.version.split()[0]}")
PY

if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
stamp=".venv/.codemode-installed"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -m pip install -q -e ".[dev${CODEMODE_EXTRAS:+,$CODEMODE_EXTRAS}]" 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import codemode, mcp, wasmtime" # fail loudly if the install did not work
    touch "$stamp"
fi
# Build (componentize-py) and compile (wasmtime) the isolate once; later runs reuse the cache.
.venv/bin/codemode warmup
