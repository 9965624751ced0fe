#!/usr/bin/env bash
# Every test: the lint first (rustfmt and clippy, native and wasm32: fails fast), the
# supply-chain checks (cargo deny, deny.toml), the wasm32 hydrate build and the server
# (cargo leptos build), the native tests (protocol, store, hub, server integration with
# real binaries; storage and services on SQLite and on a throw-away PostgreSQL, and the
# server's integration tests again with the server on PostgreSQL; two replicas on one
# PostgreSQL, server/tests/replicas.rs, and the SQLite-to-PostgreSQL copy,
# server/tests/db_copy.rs, in the first pass only), Playwright in Chromium, then a short run of every fuzz target (with the
# known crash inputs replayed). The builds and tests share one profile (dev), so nothing
# but clippy's check pass is compiled twice.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/end2end/node_modules/.bin:$PATH"

echo "== lint (rustfmt, clippy native and wasm32)"
make lint
echo "== supply chain (cargo deny: licenses, bans, sources; advisories with a local database)"
make deny
echo "== build: wasm (hydrate) + server"
cargo leptos build --split   # --split: admin pages are separate wasm chunks (lazy routes)
echo "== build: agent and the GitHub stand-in"
cargo build -p nixdeck-agent -p testkit
echo "== packaging (flake outputs, Nix modules and plain units, held against the binaries just built)"
python3 scripts/check_packaging.py   # docs/INSTALL.md, "What was checked here"
echo "== cargo test (storage on SQLite and on a throw-away PostgreSQL: scripts/pg.sh)"
NIXDECK_TEST_POSTGRES_URL=$(scripts/pg.sh start)
export NIXDECK_TEST_POSTGRES_URL
trap 'scripts/pg.sh stop "$NIXDECK_TEST_POSTGRES_URL"' EXIT
cargo test --workspace --exclude frontend
echo "== cargo test: the server's integration tests again, the server on PostgreSQL"
NIXDECK_TEST_SERVER_DATABASE=postgres cargo test -p nixdeck --test '*'
echo "== playwright"
scripts/e2e.sh
echo "== fuzz (briefly; scripts/fuzz.sh 300 for a real session)"
scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
