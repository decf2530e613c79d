#!/usr/bin/env bash
# Run the official MCP conformance suite against `codemode serve SPEC --transport http` and print the summary.
#   scripts/run-conformance.sh [SPEC] [-- extra conformance args, e.g. --scenario tools-list]
# Needs scripts/setup-node.sh (Node 22 + @modelcontextprotocol/conformance in .tools/). Results go to
# $OUT (default: a temporary folder, printed at the end): one checks.json per scenario.
# Set STATELESS=1 to serve --stateless (the baseline is written for the stateful server).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SPEC="specs/petstore3-openapi.yaml"
if [[ $# -gt 0 && "$1" != "--" ]]; then SPEC="$1"; shift; fi
[[ "${1:-}" == "--" ]] && shift

CONFORMANCE="$ROOT/.tools/mcp/node_modules/.bin/conformance"
NODE_BIN="$ROOT/.tools/node22/node_modules/.bin"
[[ -x "$CONFORMANCE" && -x "$NODE_BIN/node" ]] || { echo "Node 22 tools not installed: run scripts/setup-node.sh" >&2; exit 1; }
export PATH="$NODE_BIN:$PATH"

PORT="$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
OUT="${OUT:-$(mktemp -d -t codemode-conformance-XXXXXX)}"
LOG="$OUT/server-stderr.txt"
extra=()
[[ "${STATELESS:-0}" == "1" ]] && extra+=(--stateless)

setsid .venv/bin/codemode serve "$SPEC" --transport http --port "$PORT" "${extra[@]}" >"$LOG" 2>&1 &
SERVER_PID=$!
cleanup() { kill -- "-$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
trap cleanup EXIT

for _ in $(seq 1 300); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "codemode serve exited:" >&2; cat "$LOG" >&2; exit 1; fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.2
done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || { echo "server not listening on $PORT:" >&2; cat "$LOG" >&2; exit 1; }

if [[ $# -eq 0 ]]; then set -- --suite all; fi
status=0
"$CONFORMANCE" server --url "http://127.0.0.1:$PORT/mcp" --expected-failures tests/conformance-baseline.yml \
  -o "$OUT" "$@" >"$OUT/conformance.txt" 2>&1 || status=$?
if grep -q '=== SUMMARY ===' "$OUT/conformance.txt"; then
  sed -n '/=== SUMMARY ===/,$p' "$OUT/conformance.txt"
else
  tail -n 40 "$OUT/conformance.txt"
fi
echo "exit $status; full output and checks.json files in $OUT"
exit "$status"
