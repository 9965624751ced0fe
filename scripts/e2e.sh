#!/usr/bin/env bash
# Runs the Playwright suite against the real server binary on a fresh SQLite file. The tests
# start and stop real agent processes themselves. Expects `cargo leptos build --split` and the agent
# to be built (scripts/test.sh does both).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${E2E_PORT:-3900}
work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

export NIXDECK_ADMIN_PASSWORD="e2e-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
NIXDECK_LISTEN="127.0.0.1:$port" \
NIXDECK_DATABASE_URL="sqlite://$work/e2e.db" \
NIXDECK_HEARTBEAT_INTERVAL_S=2 \
NIXDECK_SITE_ROOT=target/site \
RUST_LOG=${RUST_LOG:-info} \
  target/debug/nixdeck >"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break
  sleep 0.1
done

status=0
(
  cd end2end
  BASE_URL="http://127.0.0.1:$port" \
  NIXDECK_DATABASE_URL="sqlite://$work/e2e.db" \
  NIXDECK_AGENT_BIN="$PWD/../target/debug/nixdeck-agent" \
  PLAYWRIGHT_JSON_OUTPUT_NAME="$work/results.json" \
    npx playwright test --reporter=list,json "$@"
) || status=$?

# A closing line that any CI log reader understands.
node -e '
  const r = require(process.argv[1]).stats;
  console.log(`playwright: ${r.expected} passed, ${r.unexpected + r.flaky} failed, ${r.skipped} skipped`);
' "$work/results.json" || true
if [ "$status" -ne 0 ]; then
  echo "---- server log (last 60 lines) ----"
  tail -n 60 "$work/server.log"
fi
exit "$status"
