#!/usr/bin/env bash
# Install what the Node-based protocol checks need into .tools/ (no npx downloads at test time):
#   .tools/node22/          Node 22 (the npm "node" package ships the official binary)
#   .tools/mcp/             @modelcontextprotocol/conformance and @modelcontextprotocol/inspector
#   .tools/conformance-auth/ @modelcontextprotocol/conformance 0.2.0-alpha.12, for its `authorization`
#                           command (the portal's authorization-server scenarios); its own prefix so
#                           the pinned 0.1.16 server suite above stays as it is
# Idempotent and quiet: re-running with everything in place does nothing.
# Used by tests/test_conformance.py, tests/test_conformance_portal.py, tests/test_inspector.py and
# scripts/run-conformance.sh.
set -euo pipefail

NODE_VERSION="22.23.3"
CONFORMANCE_VERSION="0.1.16"
INSPECTOR_VERSION="2.12.0"
AUTH_CONFORMANCE_VERSION="0.2.0-alpha.12"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
NODE_DIR="$TOOLS/node22"
PKG_DIR="$TOOLS/mcp"
AUTH_DIR="$TOOLS/conformance-auth"
NODE_BIN="$NODE_DIR/node_modules/.bin/node"

command -v npm >/dev/null || { echo "setup-node.sh: npm is required (any Node version) to bootstrap Node 22" >&2; exit 1; }

npm_quiet() { npm "$@" --no-audit --no-fund --loglevel=error >/dev/null; }

if [[ ! -x "$NODE_BIN" ]] || [[ "$("$NODE_BIN" --version)" != "v$NODE_VERSION" ]]; then
  mkdir -p "$NODE_DIR"
  npm_quiet install --prefix "$NODE_DIR" "node@$NODE_VERSION"
fi
"$NODE_BIN" --version | grep -q "^v22\." || { echo "setup-node.sh: $NODE_BIN is not Node 22" >&2; exit 1; }

installed_version() {  # installed_version PACKAGE [PREFIX] -> version or empty
  local pj="${2:-$PKG_DIR}/node_modules/$1/package.json"
  [[ -f "$pj" ]] && "$NODE_BIN" -p "require('$pj').version" || true
}

if [[ "$(installed_version @modelcontextprotocol/conformance)" != "$CONFORMANCE_VERSION" ]] ||
   [[ "$(installed_version @modelcontextprotocol/inspector)" != "$INSPECTOR_VERSION" ]]; then
  mkdir -p "$PKG_DIR"
  # Node 22 first on PATH so engines checks and install scripts see it.
  PATH="$NODE_DIR/node_modules/.bin:$PATH" npm_quiet install --prefix "$PKG_DIR" \
    "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" "@modelcontextprotocol/inspector@$INSPECTOR_VERSION"
fi

if [[ "$(installed_version @modelcontextprotocol/conformance "$AUTH_DIR")" != "$AUTH_CONFORMANCE_VERSION" ]]; then
  mkdir -p "$AUTH_DIR"
  PATH="$NODE_DIR/node_modules/.bin:$PATH" npm_quiet install --prefix "$AUTH_DIR" \
    "@modelcontextprotocol/conformance@$AUTH_CONFORMANCE_VERSION"
fi
[[ -e "$AUTH_DIR/node_modules/.bin/conformance" ]] || { echo "setup-node.sh: missing $AUTH_DIR/node_modules/.bin/conformance" >&2; exit 1; }

for bin in conformance mcp-inspector; do
  [[ -e "$PKG_DIR/node_modules/.bin/$bin" ]] || { echo "setup-node.sh: missing $PKG_DIR/node_modules/.bin/$bin" >&2; exit 1; }
done
