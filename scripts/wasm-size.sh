#!/usr/bin/env bash
# P5 in docs/BENCHMARKS.md: the release wasm as shipped, brotli q11. `cargo leptos build --release
# --split --frontend-only` (the `wasm-release` profile, wasm-bindgen, wasm-split, then
# cargo-leptos's `wasm-opt -Oz`), then the size of every wasm file in the site's pkg/:
# the dashboard's own download (nixdeck.wasm) and the chunks loaded on demand.
#
# Environment:
#   NO_BUILD=1   measure target/site/pkg as it is (after `cargo leptos build --release --split`)
#
# Note: target/site then holds the release build; `cargo leptos build --split` restores the
# debug one.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
pkg="$root/target/site/pkg"

if [[ "${NO_BUILD:-0}" != 1 ]]; then
  export PATH="$root/end2end/node_modules/.bin:$PATH"
  # Chunks of earlier builds would otherwise be counted too.
  rm -f "$pkg"/*.wasm
  cargo leptos build --release --split --frontend-only
fi

brotli_size() {
  if command -v brotli >/dev/null 2>&1; then
    brotli -q 11 -c "$1" | wc -c
  else
    python3 -c 'import brotli,sys;print(len(brotli.compress(open(sys.argv[1],"rb").read(),quality=11)))' "$1"
  fi
}

total_raw=0
total_br=0
printf '%-62s %10s %10s %10s\n' file raw gzip-9 brotli-q11
for f in "$pkg/nixdeck.wasm" $(ls "$pkg"/*.wasm | grep -v '/nixdeck.wasm$' | sort); do
  raw=$(wc -c <"$f")
  gz=$(gzip -9 -c "$f" | wc -c)
  br=$(brotli_size "$f")
  total_raw=$((total_raw + raw))
  total_br=$((total_br + br))
  printf '%-62s %10s %10s %10s\n' "$(basename "$f")" "$raw" "$gz" "$br"
done
printf '%-62s %10s %10s %10s\n' "all chunks together" "$total_raw" "" "$total_br"
echo "P5 (the dashboard's download, nixdeck.wasm): brotli q11 $(brotli_size "$pkg/nixdeck.wasm") B"
