#!/usr/bin/env bash
# Installs what building and testing nixdeck needs, when missing. Idempotent; on a fresh
# machine the first run takes ~21 min, almost all of it compiling cargo-leptos and cargo-deny.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v sqlite3 >/dev/null || need_apt+=(sqlite3)
command -v curl >/dev/null || need_apt+=(curl)
command -v git >/dev/null || need_apt+=(git)
# Real Nix for the agent's Nix tests (agent/README.md, "Testing with real Nix"): Debian's
# nix-bin, no daemon; the tests set NIX_CONFIG for an offline store without nixbld.
command -v nix >/dev/null || need_apt+=(nix-bin)
# PostgreSQL for the storage tests on PostgreSQL: scripts/pg.sh runs a throw-away server
# from Debian's binaries (not on PATH: /usr/lib/postgresql/VERSION/bin), psql for the
# server tests' set-up statements.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && command -v psql >/dev/null || need_apt+=(postgresql)
# scripts/check_packaging.py verifies the systemd units with systemd-analyze.
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

if [ "$(cargo leptos --version 2>/dev/null)" != "cargo-leptos 0.3.11" ]; then
  echo "setup: installing cargo-leptos 0.3.11 (takes ~14 min on 2 cores)"
  cargo install cargo-leptos --version 0.3.11 --locked --ignore-rust-version
fi

# The supply-chain checks of `make test` (deny.toml). Takes ~4 min on 2 cores.
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny 0.20.2" ]; then
  echo "setup: installing cargo-deny 0.20.2 (takes ~4 min on 2 cores)"
  cargo install cargo-deny --version 0.20.2 --locked
fi

# cargo-leptos runs wasm-bindgen from PATH and does not check its version, so install the
# exact version Cargo.lock pins (the crate is pinned with `=` in Cargo.toml).
wb=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $wb" ]; then
  echo "setup: installing wasm-bindgen-cli $wb"
  cargo install wasm-bindgen-cli --version "$wb"
fi

# Playwright and a new wasm-opt (Debian's binaryen 108 breaks the release wasm).
if [ ! -x end2end/node_modules/.bin/playwright ] || [ ! -x end2end/node_modules/.bin/wasm-opt ]; then
  (cd end2end && npm ci --no-audit --no-fund)
fi

# openapi-core in .venv/ for the test that validates real answers against the OpenAPI
# document (server/tests/openapi.rs runs scripts/openapi_check.py). Pinned; reinstalled only
# when the requirements file changes.
if ! cmp -s scripts/openapi-requirements.txt .venv/openapi-requirements.txt 2>/dev/null; then
  echo "setup: installing openapi-core in .venv (scripts/openapi-requirements.txt)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/openapi-requirements.txt
  cp scripts/openapi-requirements.txt .venv/openapi-requirements.txt
fi
