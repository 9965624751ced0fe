#!/usr/bin/env bash
# The agent's memory (docs/BENCHMARKS.md, "Agent memory"): RSS, PSS and anonymous memory of
# the release agent, idle and connected, then after COMMANDS short commands (a `test`
# command configured as `true`), run one after another through a release dashboard.
#
#   COMMANDS=10000 bench/agent_memory.sh
#   NO_BUILD=1 …      use target/release as it is
#   PROFILE=debug …   the debug binaries `make test` builds (a quick try; not the figure)
set -euo pipefail
cd "$(dirname "$0")/.."
COMMANDS=${COMMANDS:-10000}
PORT=${PORT:-3970}
OUT=${OUT:-$(mktemp -d /tmp/nixdeck-agent-memory.XXXXXX)}
mkdir -p "$OUT"
PROFILE=${PROFILE:-release}
if [ "${NO_BUILD:-0}" != 1 ]; then
  if [ "$PROFILE" = release ]; then
    cargo build --release -p nixdeck -p nixdeck-agent
  else
    cargo build -p nixdeck -p nixdeck-agent
  fi
fi
bin=target/$PROFILE
. bench/lib.sh

start_dashboard
login
token=$(api POST /api/hosts '{"hostname":"mem","host_type":"nixos"}' | field 'd["agent_token"]')
printf '[commands]\ntest = ["true"]\n' >"$OUT/agent.toml"
NIXDECK_TOKEN="$token" RUST_LOG=warn $bin/nixdeck-agent --url "$url" --hostname mem \
  --state-dir "$OUT/state" --config "$OUT/agent.toml" >>"$OUT/agent.log" 2>&1 &
agent_pid=$!
pids+=($agent_pid)
echo "machine: $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); results in $OUT" >&2
python3 bench/agent_memory.py "$url" "$password" mem "$agent_pid" "$COMMANDS" | tee "$OUT/agent-memory.json"
