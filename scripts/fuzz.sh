#!/usr/bin/env bash
# Fuzzes the wire types of the `protocol` crate (fuzz/, a standalone cargo-fuzz crate).
#
#   scripts/fuzz.sh [seconds-per-target]      # default 20
#
# Env: FUZZ_TARGETS="agent_frame rest_bodies" runs only some targets; FUZZ_ARGS adds
# libFuzzer flags (e.g. "-use_value_profile=1", or "-fork=1 -ignore_crashes=1" to go on past
# a crash). Needs rustup; installs the nightly toolchain and cargo-fuzz when missing.
#
# Each target starts from the committed seeds (fuzz/seeds/<target>) plus its growing local
# corpus (fuzz/corpus/<target>, git-ignored), with the libFuzzer dictionary
# fuzz/dicts/<target>.dict. A crash input lands in fuzz/artifacts/<target>/; the script
# prints it and exits 1. Minimal inputs of bugs found so far are kept in fuzz/crashes/ and are
# replayed first as regression tests; replay one by hand with
#   (cd fuzz && cargo +nightly fuzz run <target> crashes/<target>-<name>)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-20}
case "$secs" in
  ''|*[!0-9]*) echo "usage: $0 [seconds-per-target]" >&2; exit 2 ;;
esac

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "==> installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked || cargo install cargo-fuzz
fi

echo "==> building the fuzz targets"
cargo +nightly fuzz build

targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
logs=artifacts/logs
mkdir -p "$logs"
failed=()
summary=()

for t in $targets; do
  mkdir -p "corpus/$t" "seeds/$t"
  # Inputs of bugs already found and fixed must stay fixed.
  known=(crashes/"$t"-*)
  if [ -e "${known[0]}" ]; then
    if ! cargo +nightly fuzz run "$t" "${known[@]}" >"$logs/$t.regressions.log" 2>&1; then
      echo "==> $t: a known crash input in fuzz/crashes/ fails again (see fuzz/$logs/$t.regressions.log)"
      summary+=("$t: REGRESSION on a fuzz/crashes/$t-* input")
      failed+=("$t")
      continue
    fi
  fi
  echo "==> $t: ${secs}s"
  log="$logs/$t.log"
  timing="$logs/$t.time"
  dict=()
  [ -f "dicts/$t.dict" ] && dict=(-dict="dicts/$t.dict")
  rc=0
  # New interesting inputs go into the first directory (corpus/), never into seeds/.
  # shellcheck disable=SC2086
  { TIMEFORMAT='%R %U %S'; time cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      "${dict[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1; } 2>"$timing" || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  # -fork=N prints no final stats: take the last status line's total ("#123: cov: ...").
  [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
  # -fork=N -ignore_crashes=1 exits 0 after crashes; its status lines count them.
  forked=$(grep -oE 'oom/timeout/crash: [0-9]+/[0-9]+/[0-9]+' "$log" | tail -1 | awk -F'[ /]' '{print $2 + $3 + $4}' || true)
  [ "${forked:-0}" -gt 0 ] && [ "$rc" -eq 0 ] && rc=1
  read -r wall user sys <"$timing" || true
  cpu=$(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN { printf "%.1f", u + s }')
  if [ "$rc" -ne 0 ]; then
    artifact=$(grep -oE '(Test unit written to|CRASH: saved to|OOM: saved to|TIMEOUT: saved to) [^ ]*' "$log" \
      | tail -1 | awk '{print $NF}' || true)
    # -fork=N names no file: take the newest artifact.
    [ -n "$artifact" ] || artifact=$(ls -t "artifacts/$t"/crash-* "artifacts/$t"/oom-* "artifacts/$t"/timeout-* 2>/dev/null | head -1 || true)
    [ -z "$artifact" ] || artifact=$(realpath --relative-to=. "$artifact")
    # libFuzzer prints the panic message above the "==ERROR"/"deadly signal" line.
    reason=$(grep -m1 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" -A2 "$log" || true)
    summary+=("$t: CRASH after ${wall}s wall, ${cpu}s CPU, ${execs:-?} execs -> fuzz/${artifact:-$log}")
    failed+=("$t")
    echo "$reason"
    echo "    reproduce: (cd fuzz && cargo +nightly fuzz run $t ${artifact:-<artifact>})"
  else
    summary+=("$t: ok, ${wall}s wall, ${cpu}s CPU, ${execs:-?} execs, corpus $(find "corpus/$t" -type f | wc -l) files")
  fi
done

echo
echo "==> summary (logs in fuzz/$logs)"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
  echo "==> crashes in: ${failed[*]}" >&2
  exit 1
fi
