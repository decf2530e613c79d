#!/usr/bin/env bash
# The wheels codemode-mcp depends on (no extras), and pip, in .cache/wheelhouse: the install tests
# (tests/test_wheel_install.py) install the built wheel with pip, pipx and uvx from here with
# --no-index, so no test reaches a package index. Rebuilt when pyproject.toml changes. Idempotent.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
house=.cache/wheelhouse
stamp="$house/.complete"
if [[ -f "$stamp" && ! pyproject.toml -nt "$stamp" ]]; then
    exit 0
fi
echo "setup-wheelhouse.sh: collecting the dependency wheels into $house"
rm -rf "$house"
mkdir -p "$house"
log=.cache/wheelhouse.log
# `pip wheel .` resolves the project's dependencies exactly as `pip install` of its wheel does.
if ! .venv/bin/python -m pip wheel -q -w "$house" . "pip>=24" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2
    echo "setup-wheelhouse.sh: pip wheel failed (full log: $log)" >&2
    exit 1
fi
rm -f "$house"/codemode_mcp-*.whl  # the tests build their own, from the working tree
touch "$stamp"
