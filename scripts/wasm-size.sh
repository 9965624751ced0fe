#!/usr/bin/env bash
# P5 in docs/BENCHMARKS.md: the release wasm as shipped, brotli q11. `cargo leptos build --release
# --split --frontend-only` (the `wasm-release` profile, wasm-bindgen, wasm-split, then
# wasm-opt with the arguments of Cargo.toml's `wasm-opt-features`), then the size of every wasm file in the site's pkg/:
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

# wasm-split (cargo-leptos 0.3.11, wasm_split_cli_support 0.2.3) gives each chunk its own
# part of the .rodata segment, padding every chunk's part to the segment's alignment (8). If
# the padded parts come out longer than the input segment, it gives up and leaves the WHOLE
# segment, every chunk's strings and tables, in nixdeck.wasm: ≈ 48 kB raw, ≈ 14 kB brotli
# (docs/BENCHMARKS.md, "Session 10: why a lazy page cost 14 kB"). Whether it happens hangs
# on a few hundred bytes of padding, so any change can flip it: say so loudly.
python3 - "$pkg" <<'PY'
import glob, os, sys
def data_size(path):
    b = open(path, "rb").read()
    i, total = 8, 0
    while i < len(b):
        sid = b[i]; i += 1
        size = shift = 0
        while True:
            x = b[i]; i += 1
            size |= (x & 0x7F) << shift; shift += 7
            if x < 0x80: break
        if sid == 11: total += size
        i += size
    return total
pkg = sys.argv[1]
main = data_size(os.path.join(pkg, "nixdeck.wasm"))
chunks = sum(data_size(f) for f in glob.glob(os.path.join(pkg, "*.wasm")) if not f.endswith("/nixdeck.wasm"))
print(f"data section: nixdeck.wasm {main} B, the chunks {chunks} B")
# A good split leaves about a third of all data in the chunks (47 845 of 143 874 B at
# 2bf4b6e); the fallback leaves them only segment headers.
if chunks < 0.15 * (main + chunks):
    print("FAILED: wasm-split left every chunk's data in nixdeck.wasm (its overlong-segment "
          "fallback); see docs/BENCHMARKS.md, \"Session 10: why a lazy page cost 14 kB\"")
    sys.exit(1)
PY
