#!/usr/bin/env bash
# Create .venv-upstreams with the real upstream servers used by the live tests:
# httpbin (with its /spec.json main app) under gunicorn, Kinto, and authlib for the test OAuth 2.0 +
# OpenID Connect provider (tests/oauth_provider/app.py, a Flask app; Flask comes with httpbin).
#
# Idempotent: does nothing when the venv already has the pinned versions.
# Override the location with CODEMODE_UPSTREAMS_VENV.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CODEMODE_UPSTREAMS_VENV:-$root/.venv-upstreams}"
python="${PYTHON:-python3}"

httpbin_version="0.10.4"
kinto_version="26.5.0"
authlib_version="1.9.10"

installed() {
    # Succeeds when the venv exists and has the pinned versions plus gunicorn.
    [[ -x "$venv/bin/python" ]] || return 1
    "$venv/bin/python" - "$httpbin_version" "$kinto_version" "$authlib_version" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import PackageNotFoundError, version

want = {"httpbin": sys.argv[1], "kinto": sys.argv[2], "authlib": sys.argv[3]}
try:
    ok = all(version(name) == v for name, v in want.items())
    version("gunicorn")
    version("flasgger")  # present only with httpbin[mainapp]
    version("flask")
except PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if ok else 1)
EOF
}

if installed; then
    echo "upstream servers already installed in $venv"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -qq --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -qq --disable-pip-version-check \
    "httpbin[mainapp]==$httpbin_version" gunicorn "kinto==$kinto_version" "authlib==$authlib_version"

if ! installed; then
    echo "setup-upstreams: installation into $venv did not produce the pinned versions" >&2
    exit 1
fi
echo "upstream servers installed in $venv"
