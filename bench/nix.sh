#!/usr/bin/env bash
# The Nix figures of docs/BENCHMARKS.md, on real Nix (Debian's nix-bin) and the offline test
# flake (`test-flake`, testkit::nix). Prints figures; never fails on them.
#
#   bench/nix.sh                       # both steps
#   STEPS=switch ROUNDS=20 bench/nix.sh
#
# Steps:
#   switch   the switch path's overhead: per round, a new version of the flake is switched
#            by nixdeck (REST POST → the command's end, seen through GET /api/commands/{id}:
#            dispatch, supervisor, build, profile, activation, health gate, delivery) and
#            another new version by the plain steps nixos-rebuild runs (nix build, nix-env
#            --set, switch-to-configuration) in a shell. Both build one new system each round.
#   preview  HOSTS agents (default 50) on this machine, each with its own profile; one bulk
#            `preview` through REST; time until every preview's result is stored, and the
#            dashboard's CPU time meanwhile. (The page's half, click → fleet diff shown, is
#            end2end/bench/preview.bench.ts.)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-10}
HOSTS=${HOSTS:-50}
STEPS=${STEPS:-"switch preview"}
PORT=${PORT:-3970}
OUT=${OUT:-$(mktemp -d /tmp/nixdeck-nix-bench.XXXXXX)}
mkdir -p "$OUT"
url="http://127.0.0.1:$PORT"
password=bench-admin-password

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

pids=()
server_pid=
cleanup() {
  for p in "${pids[@]}" $server_pid; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

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
api() { # method path [json]
  curl -sf -b "$jar" -H "X-CSRF-Token: $csrf" -H 'Content-Type: application/json' \
    -H "Origin: $url" -X "$1" "$url$2" ${3:+-d "$3"}
}
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

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

# Waits for a command's end; prints its status.
wait_done() { # command_id
  while :; do
    local s
    s=$(api GET "/api/commands/$1" | field 'd["status"]')
    case $s in queued | running) sleep 0.01 ;; *) echo "$s"; return ;; esac
  done
}

has() { [[ " $STEPS " == *" $1 "* ]]; }
echo "machine: $(nproc) cores; nix $(nix --version | awk '{print $3}'); $(date -u +%Y-%m-%dT%H:%MZ); results in $OUT" >&2

if has switch; then
  repo="$OUT/switch-repo"
  $bin/test-flake "$repo" --host bench-0 --version 0.0 --commit init >/dev/null
  machine bench-0 "$repo"
  wait_online 1
  plain_profile="$OUT/plain/system"
  mkdir -p "$OUT/plain"
  python3 bench/nix_switch.py "$url" "$password" "$repo" "$bin/test-flake" bench-0 \
    "$plain_profile" "$ROUNDS"
fi

if has preview; then
  repo="$OUT/preview-repo"
  names=()
  for i in $(seq 1 "$HOSTS"); do names+=(--host "fleet-$i"); done
  $bin/test-flake "$repo" "${names[@]}" --version 1.0 --package openssl=3.0.14 \
    --package curl=8.1 --commit v1 >/dev/null
  for i in $(seq 1 "$HOSTS"); do machine "fleet-$i" "$repo"; done
  wait_online "$HOSTS"
  # The systems the previews compare against: version 1 on every host.
  for i in $(seq 1 "$HOSTS"); do
    p=$(nix build --no-link --json "$repo#nixosConfigurations.fleet-$i.config.system.build.toplevel" 2>/dev/null |
      field 'd[0]["outputs"]["out"]')
    nix-env -p "$OUT/hosts/fleet-$i/profiles/system" --set "$p" >/dev/null
  done
  $bin/test-flake "$repo" "${names[@]}" --version 1.1 --package openssl=3.0.15 \
    --package zlib=1.3 --commit v2 >/dev/null
  ticks=$(getconf CLK_TCK)
  cpu() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
  c0=$(cpu)
  t0=$(now_ms)
  hosts_json=$(seq 1 "$HOSTS" | sed 's/.*/"fleet-&"/' | paste -sd, -)
  ids=$(api POST /api/bulk "{\"command\":\"preview\",\"host_ids\":[$hosts_json]}" |
    field '" ".join(r["command_id"] for r in d["results"] if "command_id" in r)')
  n=$(wc -w <<<"$ids")
  [ "$n" -eq "$HOSTS" ] || { echo "bulk queued $n of $HOSTS previews" >&2; exit 1; }
  for id in $ids; do
    status=$(wait_done "$id")
    [ "$status" = ok ] || { echo "preview $id ended $status" >&2; exit 1; }
  done
  t1=$(now_ms)
  c1=$(cpu)
  echo "bulk preview of $HOSTS hosts: $((t1 - t0)) ms until every result was stored;" \
    "dashboard CPU $(((c1 - c0) * 1000 / ticks)) ms of $((t1 - t0)) ms wall"
fi
