#!/usr/bin/env bash
# The demo that `make run` starts, without the build: the dashboard on SQLite, a fake GitHub
# (testkit's fake-github) serving a demo config repository, and one real agent for this
# machine whose config checkout is a clone of that repository. Runs until stopped (Ctrl-C or
# SIGTERM stops all three). Expects `cargo leptos build --split` and
# `cargo build -p nixdeck-agent -p testkit` (scripts/run.sh does both).
#
# A demo, not a production set-up: the desired state comes from a local fake of GitHub's
# API, the flake is testkit's offline test flake, and Nix works on a profile in the demo's
# folder, never the machine's own system profile.
#
# Settings (environment):
#   NIXDECK_DEMO_DATA  where everything is kept (default: data); Playwright's demo spec
#                      points it at a temporary folder
#   NIXDECK_LISTEN     the dashboard's address (default: 127.0.0.1:3000)
set -euo pipefail
cd "$(dirname "$0")/.."

data=${NIXDECK_DEMO_DATA:-data}
listen=${NIXDECK_LISTEN:-127.0.0.1:3000}
url="http://$listen"
mkdir -p "$data"
chmod 700 "$data"
data=$(cd "$data" && pwd)
for bin in nixdeck nixdeck-agent fake-github test-flake; do
  if [ ! -x "target/debug/$bin" ]; then
    echo "demo: target/debug/$bin is missing; run make run (or cargo leptos build --split and cargo build -p nixdeck-agent -p testkit)" >&2
    exit 1
  fi
done
# The admin password is made once and kept, so every `make run` can print it.
if [ ! -s "$data/admin-password" ]; then
  (umask 077; od -An -N15 -tx1 /dev/urandom | tr -d ' \n' > "$data/admin-password")
fi
password=$(cat "$data/admin-password")
host=$(hostname -s | tr '[:upper:]' '[:lower:]')

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The demo config repository: a bare origin (what fake-github serves and merges into), a
# work tree that writes its commits, and the agent's checkout. It holds testkit's small
# offline Nix flake (no inputs, /bin/sh builders), so Pull, Preview, Switch, Generations,
# Rollback and Test do real work here. Its history tells the dashboard's story:
#   1. the fleet's configuration, version 26.05.1   <- the agent's checkout is here
#   2. version 26.05.2 (openssl update, zlib added, curl dropped, a new kernel)
#                                                    -> git is behind (amber) until Pull
#   3. a flake.lock update                           -> lock differs (amber) until Pull
#   and a branch `update-flake-lock` with one more lock update, which fake-github offers as
#   an open update PR by a bot: Merge & Deploy merges it and rolls it out.
# A flake.lock is a lock Nix reads (no inputs) plus a field Nix ignores; the flake hashes
# the lock into every system, so a lock update changes the system as a new nixpkgs would.
demo=$data/demo
layout=2 # bump when the repository's story changes: an older demo is rebuilt
g() { git -c user.name=nixdeck -c user.email=demo@nixdeck.invalid -c init.defaultBranch=main "$@"; }
lock() { printf '{"nodes": {"root": {}}, "root": "root", "version": 7, "nixdeck-demo": "%s"}\n' "$1" > "$demo/work/flake.lock"; }
flake() { # version, then test-flake flags
  local version=$1
  shift
  target/debug/test-flake "$demo/work" --host "$host" --version "$version" "$@" \
    --commit "demo: the fleet's configuration, version $version" >/dev/null
  g -C "$demo/work" push -q origin HEAD:main
}
if [ "$(cat "$demo/layout" 2>/dev/null)" != "$layout" ]; then
  rm -rf "$demo"
  mkdir -p "$demo/profiles"
  g init -q --bare "$demo/origin.git"
  g clone -q "$demo/origin.git" "$demo/work" 2>/dev/null
  mkdir -p "$demo/work/hosts/$host/tests"
  lock 2026-05-01
  printf '#!/bin/sh\necho "checking disk space"; df -h / | tail -1\n' > "$demo/work/hosts/$host/tests/10-disk.sh"
  printf '#!/bin/sh\necho "checking the clock"; date -u\n' > "$demo/work/hosts/$host/tests/20-clock.sh"
  chmod +x "$demo/work/hosts/$host/tests/"*.sh
  flake 26.05.1 --package openssl=3.0.14 --package curl=8.1 --kernel 6.12.9
  g clone -q "$demo/origin.git" "$demo/checkout"
  flake 26.05.2 --package openssl=3.0.15 --package zlib=1.3 --kernel 6.12.10
  lock 2026-05-08
  g -C "$demo/work" commit -qam "flake.lock: update nixpkgs (demo)"
  g -C "$demo/work" push -q origin HEAD:main
  g -C "$demo/work" checkout -qb update-flake-lock
  lock 2026-05-15
  g -C "$demo/work" commit -qam "flake.lock: update nixpkgs (demo)"
  g -C "$demo/work" push -q origin update-flake-lock
  echo "$layout" > "$demo/layout"
fi

# fake-github picks a free port and names it on its first line.
: > "$demo/fake-github.out"
target/debug/fake-github --repo-dir "$demo/origin.git" --owner demo --name fleet-config \
  >"$demo/fake-github.out" 2>"$demo/fake-github.log" &
pids+=($!)
gh=""
for _ in $(seq 1 100); do
  gh=$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$demo/fake-github.out")
  [ -n "$gh" ] && break
  sleep 0.1
done
if [ -z "$gh" ]; then
  echo "demo: fake-github did not start:" >&2
  cat "$demo/fake-github.log" >&2
  exit 1
fi
# Its PRs live in memory: open the update PR again on every start, unless it was merged.
if ! g -C "$demo/origin.git" merge-base --is-ancestor update-flake-lock main; then
  curl -sf -o /dev/null -H 'content-type: application/json' \
    -d '{"head":"update-flake-lock","title":"flake.lock: update nixpkgs (demo)","labels":["dependencies"]}' \
    "$gh/_control/pr"
fi

# The desired state is the head of the fake's main and its flake.lock, read every 5 s
# (GitHub itself would be read every 60 s, the default).
NIXDECK_LISTEN="$listen" NIXDECK_ADMIN_PASSWORD="$password" NIXDECK_SITE_ROOT=target/site \
NIXDECK_DATABASE_URL="sqlite://$data/nixdeck.db" \
NIXDECK_GITHUB_REPO=demo/fleet-config NIXDECK_GITHUB_API_URL="$gh" \
NIXDECK_DESIRED_POLL_S=5 NIXDECK_PR_POLL_S=5 \
  target/debug/nixdeck &
pids+=($!)
for _ in $(seq 1 100); do curl -sf -o /dev/null "$url/healthz" && break; sleep 0.1; done

# This machine as a host: create it once and keep its token in agent.token.
if [ ! -s "$data/agent.token" ]; then
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
  (umask 077; printf '%s' "$token" > "$data/agent.token")
fi
cat > "$data/agent.toml" <<TOML
[commands]
update = ["sh", "-c", "echo 'nix flake update (demo): the demo flake has no inputs'"]
TOML
# Nix here has no daemon, no network and no nixbld group: the settings of the tests
# (agent/README.md, "Testing with real Nix"). A real host needs none of this.
export NIX_CONFIG=$'experimental-features = nix-command flakes\nsandbox = false\nsubstituters =\nbuild-users-group =\n'
target/debug/nixdeck-agent --url "$url" --token-file "$data/agent.token" --hostname "$host" \
  --state-dir "$data/agent-state" --repo-dir "$demo/checkout" --config "$data/agent.toml" \
  --system-profile "$demo/profiles/system" --current-system "$demo/profiles/system" \
  --booted-system "$demo/booted-system" &
pids+=($!)

cat <<MSG

  nixdeck is running:  $url
  user:      admin
  password:  $password

  A demo (not a production set-up): a local agent for host '$host' is connected. Its
  config checkout ($demo/checkout) is a clone of a demo repository that a local fake
  GitHub ($gh) serves as the desired state. The checkout is two commits behind:
  git and lock are amber until you Pull. An update PR for flake.lock is open:
  Merge & Deploy merges it and rolls it out. Preview, Switch, Generations and Rollback
  run real Nix on a profile in $demo/profiles, never the machine's own.
  Ctrl-C stops everything.

MSG
wait
