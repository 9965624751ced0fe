#!/usr/bin/env bash
# Runs the dashboard on SQLite (data/nixdeck.db) with one real agent for this machine, and
# prints the URL and the admin credentials. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/end2end/node_modules/.bin:$PATH"
cargo leptos build --split   # --split: admin pages are separate wasm chunks (lazy routes)
cargo build -p nixdeck-agent

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
# A demo config repository (a local bare repo and a checkout), so Pull, Switch and Test do
# real, harmless work here: git, and shell scripts standing in for nixos-rebuild.
demo=data/demo
if [ ! -d "$demo/checkout/.git" ]; then
  mkdir -p "$demo"
  g() { git -c user.name=nixdeck -c user.email=demo@nixdeck.invalid -c init.defaultBranch=main "$@"; }
  g init -q --bare "$demo/origin.git"
  g clone -q "$demo/origin.git" "$demo/work"
  mkdir -p "$demo/work/hosts/$host/tests"
  echo '{"nodes": {}, "version": 7}' > "$demo/work/flake.lock"
  printf '#!/bin/sh\necho "checking disk space"; df -h / | tail -1\n' > "$demo/work/hosts/$host/tests/10-disk.sh"
  printf '#!/bin/sh\necho "checking the clock"; date -u\n' > "$demo/work/hosts/$host/tests/20-clock.sh"
  chmod +x "$demo/work/hosts/$host/tests/"*.sh
  g -C "$demo/work" add -A
  g -C "$demo/work" commit -qm "demo fleet configuration"
  g -C "$demo/work" push -q origin HEAD:main
  g clone -q "$demo/origin.git" "$demo/checkout"
fi
cat > data/agent.toml <<TOML
[commands]
switch = ["sh", "-c", "echo 'building the system for $host (demo)'; for i in 1 2 3 4 5; do echo \"step \$i/5\"; sleep 0.5; done; echo 'activated'"]
rollback = ["sh", "-c", "echo 'rolling back (demo)'; sleep 1; echo 'done'"]
update = ["sh", "-c", "echo 'nix flake update (demo): nothing to do'"]
TOML
target/debug/nixdeck-agent --url "$url" --token-file data/agent.token --hostname "$host" \
  --state-dir data/agent-state --repo-dir "$demo/checkout" --config data/agent.toml &
pids+=($!)

cat <<MSG

  nixdeck is running:  $url
  user:      admin
  password:  $password
  (a local agent for host '$host' is connected; its config checkout is a demo repo in
   $demo, so Pull, Switch and Test run real, harmless commands; Ctrl-C stops everything)

MSG
wait
