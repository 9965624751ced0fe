#!/usr/bin/env bash
# `make screenshots`: the README's pictures (docs/screenshots/*.png), taken by Playwright from
# the real app: a dashboard of its own on a fresh database, testkit's fake GitHub with an
# update PR, and real agents (end2end/screenshots/readme.spec.ts). Not part of `make test`.
#
# Environment:
#   NO_BUILD=1        use the binaries and target/site as they are
#   SCREENSHOT_PORT   the dashboard's port (default 3990)
#   SCREENSHOT_DIR    where the PNGs go (default docs/screenshots)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/end2end/node_modules/.bin:$PATH"
if [ "${NO_BUILD:-0}" != 1 ]; then
  cargo leptos build --split
  cargo build -p nixdeck-agent -p testkit
fi
out=${SCREENSHOT_DIR:-$PWD/docs/screenshots}
mkdir -p "$out"
export SCREENSHOT_DIR="$out"
export NIXDECK_ADMIN_PASSWORD="shots-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
(cd end2end && npx playwright test --config screenshots.config.ts)
# Smaller files where ImageMagick is at hand: a 256-colour palette (a UI has few colours;
# text edges stay smooth enough) and maximum zlib compression.
if convert -version 2>/dev/null | grep -q ImageMagick; then
  for f in "$out"/*.png; do
    convert "$f" -strip -colors 256 -define png:compression-level=9 "PNG8:$f.tmp" && mv "$f.tmp" "$f"
  done
fi
ls -l "$out"/*.png
