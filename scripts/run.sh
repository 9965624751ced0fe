#!/usr/bin/env bash
# `make run`: builds, then starts the demo (scripts/demo.sh): the dashboard on SQLite
# (data/nixdeck.db), a fake GitHub serving a demo config repository as the desired state,
# and one real agent for this machine. Prints the URL and the admin credentials; Ctrl-C
# stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/end2end/node_modules/.bin:$PATH"
cargo leptos build --split   # --split: admin pages are separate wasm chunks (lazy routes)
cargo build -p nixdeck-agent -p testkit   # testkit: fake-github and test-flake, the demo's
exec scripts/demo.sh
