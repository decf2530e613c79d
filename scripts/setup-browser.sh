#!/usr/bin/env bash
# Headless Chromium for the browser tests (tests/browser.py):
#   - Debian's chromium at /usr/bin/chromium (CODEMODE_CHROMIUM points elsewhere), installed with
#     apt-get when missing (needs root);
#   - Playwright for Python: the "browser" extra of pyproject.toml, in .venv. Only its driver is
#     used: Playwright's own browser download ("playwright install") cannot reach its host here
#     and is never run.
# Idempotent and quiet: with everything in place it does nothing and prints nothing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chromium="${CODEMODE_CHROMIUM:-/usr/bin/chromium}"

if [[ ! -x "$chromium" ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "setup-browser.sh: $chromium is missing; as root run: apt-get install -y chromium" >&2
        exit 1
    fi
    bash "$root/scripts/apt-install.sh" chromium
    [[ -x "$chromium" ]] || { echo "setup-browser.sh: chromium installed but $chromium is missing" >&2; exit 1; }
fi

[[ -x "$root/.venv/bin/python" ]] || { echo "setup-browser.sh: no .venv: run 'make setup' first" >&2; exit 1; }
"$root/.venv/bin/python" "$root/scripts/install-extra.py" browser
