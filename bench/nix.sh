#!/usr/bin/env bash
# The Nix figures of docs/BENCHMARKS.md, on real Nix (Debian's nix-bin) and the offline test
# flake (`test-flake`, testkit::nix). Prints figures; never fails on them.
#
#   ROUNDS=20 bench/nix.sh
#
# The switch path's overhead: per round, a new version of the flake is switched by
# nixdeck (REST POST → the command's end, seen through GET /api/commands/{id}: dispatch,
# supervisor, build, profile, activation, health gate, delivery) and another new version
# by the plain steps nixos-rebuild runs (nix build, nix-env --set, switch-to-configuration).
# Both build one new system each round (bench/nix_switch.py times them).
# The bulk preview figure (50 hosts, click → fleet diff in the page) is
# `BENCHES=preview bench/browser.sh` (end2end/bench/preview.bench.ts).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-10}
PORT=${PORT:-3970}
OUT=${OUT:-$(mktemp -d /tmp/nixdeck-nix-bench.XXXXXX)}
mkdir -p "$OUT"

command -v nix >/dev/null || { echo "nix is missing: run scripts/setup.sh" >&2; exit 1; }
# Tests' and benches' Nix settings (no network, no daemon, no nixbld group).
export NIX_CONFIG=$'experimental-features = nix-command flakes\nsandbox = false\nsubstituters =\nbuild-users-group =\n'

# PROFILE=debug measures the debug binaries `make test` builds (quicker to get to).
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release -p nixdeck -p nixdeck-agent -p testkit
else
  cargo build -p nixdeck -p nixdeck-agent -p testkit
fi
bin=target/$PROFILE
. bench/lib.sh

start_dashboard
login

# A host with its own checkout, profile and agent.
machine() { # name repo
  local name=$1 repo=$2 dir="$OUT/hosts/$1"
  mkdir -p "$dir/profiles"
  local token
  token=$(api POST /api/hosts "{\"hostname\":\"$name\",\"host_type\":\"nixos\"}" | field 'd["agent_token"]')
  NIXDECK_TOKEN="$token" RUST_LOG=warn $bin/nixdeck-agent --url "$url" --hostname "$name" \
    --state-dir "$dir/state" --repo-dir "$repo" --system-profile "$dir/profiles/system" \
    --current-system "$dir/profiles/system" --booted-system "$dir/booted" \
    --confirm-timeout-s 60 >>"$dir/agent.log" 2>&1 &
  pids+=($!)
}

wait_online() { # count
  for _ in $(seq 1 600); do
    local n
    n=$(api GET /api/hosts | field 'sum(1 for h in d if h["online"])')
    [ "$n" -ge "$1" ] && return 0
    sleep 0.1
  done
  echo "only $n of $1 hosts came online" >&2
  exit 1
}

echo "machine: $(nproc) cores; nix $(nix --version | awk '{print $3}'); $(date -u +%Y-%m-%dT%H:%MZ); results in $OUT" >&2

repo="$OUT/switch-repo"
$bin/test-flake "$repo" --host bench-0 --version 0.0 --commit init >/dev/null
machine bench-0 "$repo"
wait_online 1
plain_profile="$OUT/plain/system"
mkdir -p "$OUT/plain"
python3 bench/nix_switch.py "$url" "$password" "$repo" "$bin/test-flake" bench-0 \
  "$plain_profile" "$ROUNDS"
