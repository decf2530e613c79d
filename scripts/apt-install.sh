#!/usr/bin/env bash
# apt-get install -y PACKAGE... quietly, as root, without starting services or prompting.
# Runs 'apt-get update' only when the package lists do not know a package yet.
# Output goes to a log that is shown only on failure.
set -euo pipefail
[[ "$(id -u)" -eq 0 ]] || { echo "apt-install.sh: must run as root to install: $*" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
known() { for pkg in "$@"; do apt-cache show "$pkg" >/dev/null 2>&1 || return 1; done; }
run() {
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "apt-install.sh: '$*' failed" >&2
        exit 1
    fi
}
known "$@" || run apt-get update -qq
run apt-get install -y -qq --no-install-recommends "$@"
