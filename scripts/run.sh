#!/usr/bin/env bash
# Runs the dashboard on SQLite (data/nixdeck.db) with one real agent for this machine, and
# prints the URL and the admin credentials. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/end2end/node_modules/.bin:$PATH"
cargo leptos build --split   # --split: admin pages are separate wasm chunks (lazy routes)
cargo build -p nixdeck-agent -p testkit   # testkit: test-flake, the demo's Nix flake

listen=${NIXDECK_LISTEN:-127.0.0.1:3000}
url="http://$listen"
mkdir -p data
chmod 700 data
# The admin password is made once and kept, so every `make run` can print it.
if [ ! -s data/admin-password ]; then
  (umask 077; od -An -N15 -tx1 /dev/urandom | tr -d ' \n' > data/admin-password)
fi
password=$(cat data/admin-password)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

NIXDECK_LISTEN="$listen" NIXDECK_ADMIN_PASSWORD="$password" NIXDECK_SITE_ROOT=target/site \
  target/debug/nixdeck &
pids+=($!)
for _ in $(seq 1 100); do curl -sf -o /dev/null "$url/healthz" && break; sleep 0.1; done

# This machine as a host: create it once and keep its token in data/agent.token.
host=$(hostname -s | tr '[:upper:]' '[:lower:]')
if [ ! -s data/agent.token ]; then
  jar=$(mktemp)
  csrf=$(curl -sf -c "$jar" -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$password\"}" "$url/api/login" | sed -n 's/.*"csrf_token":"\([^"]*\)".*/\1/p')
  body=$(curl -s -b "$jar" -H "X-CSRF-Token: $csrf" -H 'content-type: application/json' \
    -d "{\"hostname\":\"$host\",\"host_type\":\"nixos\",\"location\":\"local\"}" "$url/api/hosts")
  token=$(echo "$body" | sed -n 's/.*"agent_token":"\([^"]*\)".*/\1/p')
  if [ -z "$token" ]; then
    # The host exists from an earlier run whose token file is gone: rotate its token.
    token=$(curl -sf -b "$jar" -H "X-CSRF-Token: $csrf" -X POST "$url/api/hosts/$host/token" \
      | sed -n 's/.*"agent_token":"\([^"]*\)".*/\1/p')
  fi
  rm -f "$jar"
  (umask 077; printf '%s' "$token" > data/agent.token)
fi
# A demo config repository (a local bare repo and a checkout) holding a small offline Nix
# flake (testkit's test flake: no inputs, /bin/sh builders), so Pull, Preview, Switch,
# Generations, Rollback and Test do real work here: git, and real Nix on a profile in
# data/demo/profiles instead of the machine's system profile. origin is one commit ahead
# of the checkout (an openssl update, zlib added, curl dropped, a new kernel): Pull, then
# Preview shows what Switch would change.
demo=data/demo
g() { git -c user.name=nixdeck -c user.email=demo@nixdeck.invalid -c init.defaultBranch=main "$@"; }
flake() { # version, then test-flake flags
  local version=$1
  shift
  target/debug/test-flake "$demo/work" --host "$host" --version "$version" "$@" \
    --commit "demo: the fleet's configuration, version $version" >/dev/null
  g -C "$demo/work" push -q origin HEAD:main
}
if [ ! -f "$demo/work/flake.nix" ]; then
  rm -rf "$demo"
  mkdir -p "$demo/profiles"
  g init -q --bare "$demo/origin.git"
  g clone -q "$demo/origin.git" "$demo/work" 2>/dev/null
  mkdir -p "$demo/work/hosts/$host/tests"
  echo '{"nodes": {"root": {}}, "root": "root", "version": 7}' > "$demo/work/flake.lock"
  printf '#!/bin/sh\necho "checking disk space"; df -h / | tail -1\n' > "$demo/work/hosts/$host/tests/10-disk.sh"
  printf '#!/bin/sh\necho "checking the clock"; date -u\n' > "$demo/work/hosts/$host/tests/20-clock.sh"
  chmod +x "$demo/work/hosts/$host/tests/"*.sh
  flake 26.05.1 --package openssl=3.0.14 --package curl=8.1 --kernel 6.12.9
  g clone -q "$demo/origin.git" "$demo/checkout"
  flake 26.05.2 --package openssl=3.0.15 --package zlib=1.3 --kernel 6.12.10
fi
cat > data/agent.toml <<TOML
[commands]
update = ["sh", "-c", "echo 'nix flake update (demo): the demo flake has no inputs'"]
TOML
# Nix here has no daemon, no network and no nixbld group: the settings of the tests
# (agent/README.md, "Testing with real Nix"). A real host needs none of this.
export NIX_CONFIG=$'experimental-features = nix-command flakes\nsandbox = false\nsubstituters =\nbuild-users-group =\n'
target/debug/nixdeck-agent --url "$url" --token-file data/agent.token --hostname "$host" \
  --state-dir data/agent-state --repo-dir "$demo/checkout" --config data/agent.toml \
  --system-profile "$demo/profiles/system" --current-system "$demo/profiles/system" \
  --booted-system "$demo/booted-system" &
pids+=($!)

cat <<MSG

  nixdeck is running:  $url
  user:      admin
  password:  $password
  (a local agent for host '$host' is connected; its config checkout is a demo repo in
   $demo with a small Nix flake, one commit behind its origin: Pull, then Preview,
   Switch, Generations and Rollback run real Nix on a profile in $demo/profiles,
   never the machine's own; Ctrl-C stops everything)

MSG
wait
