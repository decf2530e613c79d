#!/usr/bin/env bash
# PostgreSQL for the tests (tests/postgres.py starts throwaway clusters on 127.0.0.1):
#   - the PostgreSQL 15 server binaries (Debian's postgresql-15, in /usr/lib/postgresql/15/bin;
#     CODEMODE_PG_BIN points elsewhere), installed with apt-get when missing (needs root);
#   - the psycopg 3 driver: the "postgres" extra of pyproject.toml, in .venv.
# Idempotent and quiet: with everything in place it does nothing and prints nothing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pg_bin="${CODEMODE_PG_BIN:-/usr/lib/postgresql/15/bin}"

if [[ ! -x "$pg_bin/initdb" || ! -x "$pg_bin/pg_ctl" ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "setup-postgres.sh: $pg_bin/initdb is missing; as root run: apt-get install -y postgresql-15" >&2
        exit 1
    fi
    bash "$root/scripts/apt-install.sh" postgresql-15
    [[ -x "$pg_bin/initdb" ]] || { echo "setup-postgres.sh: postgresql-15 installed but $pg_bin/initdb is missing" >&2; exit 1; }
fi

[[ -x "$root/.venv/bin/python" ]] || { echo "setup-postgres.sh: no .venv: run 'make setup' first" >&2; exit 1; }
"$root/.venv/bin/python" "$root/scripts/install-extra.py" postgres
