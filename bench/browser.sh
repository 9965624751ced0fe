#!/usr/bin/env bash
# The browser benchmarks of docs/BENCHMARKS.md (`make bench-browser`): P4 (login → dashboard) and P3
# (heartbeats per second against the vanilla seed page) in headless Chromium, on a release
# build. Prints figures; never fails on them.
#
#   bench/browser.sh              # both
#   BENCHES=p4 P4_RUNS=5 bench/browser.sh
#
# The release site and server are copied to $SNAP first, so a build started meanwhile
# cannot change what is measured. Other knobs: see end2end/bench/p3.bench.ts and p4.bench.ts.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCHES=${BENCHES:-"p4 p3"}
SNAP=${SNAP:-$(mktemp -d /tmp/nixdeck-browser-bench.XXXXXX)}

scripts/setup.sh
export PATH="$PWD/end2end/node_modules/.bin:$PATH"
cargo leptos build --release --split
mkdir -p "$SNAP"
cp target/release/nixdeck "$SNAP/"
rm -rf "$SNAP/site" && cp -r target/site "$SNAP/site"
echo "release build copied to $SNAP (wasm $(wc -c <"$SNAP/site/pkg/nixdeck.wasm") B)"

cd end2end
for bench in $BENCHES; do
  NIXDECK_SERVER_BIN="$SNAP/nixdeck" P3_SITE_ROOT="$SNAP/site" P4_SITE_ROOT="$SNAP/site" \
    npx playwright test -c bench/playwright.bench.config.ts "$bench"
done
echo "note: target/site now holds the release build; 'cargo leptos build --split' restores the debug one"
