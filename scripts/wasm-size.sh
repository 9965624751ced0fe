#!/usr/bin/env bash
# Size of the release wasm as shipped: the `wasm-release` profile, wasm-bindgen, then
# `wasm-opt -Oz` (see docs/BENCHMARKS.md, "Foundation" and "P5").
# Prints raw / gzip -9 / brotli q11 bytes of the optimized wasm.
#
# Environment:
#   CARGO_TARGET_DIR  cargo's target directory (default: <repo>/target)
#   WASM_OPT          wasm-opt binary (default: end2end/node_modules/.bin/wasm-opt, else
#                     wasm-opt on PATH, else the step is skipped and the unoptimized
#                     wasm-bindgen output is measured instead)
#   WASM_OPT_FLAGS    wasm-opt's optimisation flags (default: -Oz, the recipe of the
#                     figures in docs/BENCHMARKS.md; "-Os -Os" came out smaller in brotli)
#   OUT_DIR           where wasm-bindgen and wasm-opt write (default: a temporary directory)
#   NO_BUILD=1        measure the existing build without running cargo
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${OUT_DIR:-$(mktemp -d)}"
mkdir -p "$out"

if [[ "${NO_BUILD:-0}" != 1 ]]; then
  cargo build -p frontend --lib --target wasm32-unknown-unknown --profile wasm-release
fi

wasm-bindgen "$target_dir/wasm32-unknown-unknown/wasm-release/frontend.wasm" \
  --out-dir "$out" --target web --no-typescript

wasm_opt="${WASM_OPT:-}"
if [[ -z "$wasm_opt" ]]; then
  if [[ -x "$root/end2end/node_modules/.bin/wasm-opt" ]]; then
    wasm_opt="$root/end2end/node_modules/.bin/wasm-opt"
  elif command -v wasm-opt >/dev/null 2>&1; then
    wasm_opt="$(command -v wasm-opt)"
  fi
fi

if [[ -n "$wasm_opt" ]]; then
  # shellcheck disable=SC2086
  "$wasm_opt" ${WASM_OPT_FLAGS:--Oz} --enable-bulk-memory --enable-nontrapping-float-to-int \
    "$out/frontend_bg.wasm" -o "$out/opt.wasm"
  wasm="$out/opt.wasm"
else
  echo "note: no wasm-opt found (end2end/node_modules/.bin or PATH); sizes are before wasm-opt" >&2
  wasm="$out/frontend_bg.wasm"
fi

raw=$(wc -c <"$wasm")
gz=$(gzip -9 -c "$wasm" | wc -c)
if command -v brotli >/dev/null 2>&1; then
  br=$(brotli -q 11 -c "$wasm" | wc -c)
elif python3 -c 'import brotli' 2>/dev/null; then
  br=$(python3 -c 'import brotli,sys;print(len(brotli.compress(open(sys.argv[1],"rb").read(),quality=11)))' "$wasm")
else
  br="n/a (no brotli CLI or python3 brotli module)"
fi

echo "wasm: $wasm"
printf 'raw %s B\ngzip -9 %s B\nbrotli q11 %s B\n' "$raw" "$gz" "$br"
