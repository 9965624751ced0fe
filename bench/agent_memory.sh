#!/usr/bin/env bash
# The agent's memory (docs/BENCHMARKS.md, "Agent memory"): RSS, PSS and anonymous memory of
# the release agent, idle and connected, then after COMMANDS short commands (a `test`
# command configured as `true`), run one after another through a release dashboard.
#
#   COMMANDS=10000 bench/agent_memory.sh
#   NO_BUILD=1 …      use target/release as it is
set -euo pipefail
cd "$(dirname "$0")/.."
COMMANDS=${COMMANDS:-10000}
PORT=${PORT:-3970}
OUT=${OUT:-$(mktemp -d /tmp/nixdeck-agent-memory.XXXXXX)}
mkdir -p "$OUT"
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release -p nixdeck -p nixdeck-agent
bin=target/release
url="http://127.0.0.1:$PORT"
password=bench-admin-password
pids=()
server_pid=
cleanup() {
  for p in "${pids[@]}" $server_pid; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

NIXDECK_LISTEN="127.0.0.1:$PORT" NIXDECK_DATABASE_URL="sqlite://$OUT/bench.db" \
  NIXDECK_ADMIN_PASSWORD="$password" NIXDECK_HEARTBEAT_INTERVAL_S=5 \
  NIXDECK_SITE_ROOT=target/site RUST_LOG=warn \
  $bin/nixdeck >>"$OUT/nixdeck.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do curl -sf -o /dev/null "$url/healthz" && break; sleep 0.1; done

jar="$OUT/cookies"
csrf=$(curl -sf -c "$jar" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$password\"}" "$url/api/login" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf_token"])')
token=$(curl -sf -b "$jar" -H "X-CSRF-Token: $csrf" -H 'Content-Type: application/json' \
  -H "Origin: $url" -d '{"hostname":"mem","host_type":"nixos"}' "$url/api/hosts" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["agent_token"])')
printf '[commands]\ntest = ["true"]\n' >"$OUT/agent.toml"
NIXDECK_TOKEN="$token" RUST_LOG=warn $bin/nixdeck-agent --url "$url" --hostname mem \
  --state-dir "$OUT/state" --config "$OUT/agent.toml" >>"$OUT/agent.log" 2>&1 &
agent_pid=$!
pids+=($agent_pid)
echo "machine: $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); results in $OUT" >&2
python3 bench/agent_memory.py "$url" "$password" mem "$agent_pid" "$COMMANDS" | tee "$OUT/agent-memory.json"
