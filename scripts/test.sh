#!/usr/bin/env bash
# Every test: the wasm32 hydrate build and the server (cargo leptos build), the native
# tests (protocol, store, hub, server integration with real binaries), then Playwright in
# Chromium. One profile (dev) for all of it, so nothing is compiled twice.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/end2end/node_modules/.bin:$PATH"

echo "== build: wasm (hydrate) + server"
cargo leptos build
echo "== build: agent"
cargo build -p nixdeck-agent
echo "== cargo test"
cargo test --workspace --exclude frontend
echo "== playwright"
scripts/e2e.sh
