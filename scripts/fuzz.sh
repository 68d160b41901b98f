#!/usr/bin/env bash
# Fuzzes every decoder that takes network or module bytes (the cargo-fuzz targets in fuzz/), each
# target for a bounded time, and prints a summary table. Exits non-zero if a target crashed, with
# where the crashing input is and how to replay it.
#
#   scripts/fuzz.sh [SECONDS] [FILTER]
#
# SECONDS per target (default: $FUZZ_SECONDS, else 60); FILTER: an extended regex, only targets
# whose name matches it run (default: all). Each target starts from its committed seeds
# (fuzz/corpus/<target>, never written) plus what earlier runs found (fuzz/work/corpus/<target>,
# not committed, where new inputs go). Needs the nightly toolchain and cargo-fuzz
# (scripts/setup.sh installs cargo-fuzz).
#
# Environment:
#   FUZZ_SANITIZER  none (default) or address. The targets and the decoders are safe Rust, where
#                   AddressSanitizer finds little that a panic would not, at 10x fewer runs per second
#                   (admission: 15 vs 200 runs/s on the thermostat module); use address for a long
#                   run over the C and unsafe code underneath (ring, serde_cbor's unsafe readers).
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang (default 10).
#   FUZZ_TARGET_DIR where the fuzz build goes (default ~/.cache/edgefleet/fuzz-target, outside the
#                   checkout, so that a fresh clone on the same machine, as CI makes, reuses the
#                   build of the dependencies: 30 s instead of about 3 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

seconds=${1:-${FUZZ_SECONDS:-60}}
filter=${2:-.}
sanitizer=${FUZZ_SANITIZER:-none}
timeout=${FUZZ_TIMEOUT:-10}
target_dir=${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgefleet/fuzz-target}
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || { echo "fuzz: SECONDS must be a positive integer, not '$seconds'" >&2; exit 2; }

rustup run nightly rustc --version >/dev/null 2>&1 ||
  { echo "fuzz: the nightly toolchain is missing (cargo-fuzz needs it): rustup toolchain install nightly" >&2; exit 2; }
cargo fuzz --version >/dev/null 2>&1 ||
  { echo "fuzz: cargo-fuzz is missing: run scripts/setup.sh (or cargo install cargo-fuzz --locked)" >&2; exit 2; }

mapfile -t targets < <(cargo +nightly fuzz list | grep -E -- "$filter" || true)
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no target matches '$filter' (cargo +nightly fuzz list)" >&2; exit 2; }

# Debug assertions and overflow checks on: an arithmetic overflow in a decoder is a finding.
build_flags=(--debug-assertions --sanitizer "$sanitizer" --target-dir "$target_dir")
echo "fuzz: building ${#targets[@]} target(s) (nightly, sanitizer $sanitizer)" >&2
if [ ${#targets[@]} -eq 1 ]; then
  cargo +nightly fuzz build "${build_flags[@]}" "${targets[0]}" >&2
else
  cargo +nightly fuzz build "${build_flags[@]}" >&2
fi

mkdir -p fuzz/work/logs
results=()
failed=0
for target in "${targets[@]}"; do
  work_corpus=fuzz/work/corpus/$target
  log=fuzz/work/logs/$target.log
  mkdir -p "$work_corpus" "fuzz/corpus/$target"
  echo "fuzz: $target for ${seconds}s (log: $log)" >&2
  started=$(date +%s)
  status=0
  # The binary cargo-fuzz built, run as `cargo fuzz run` would (without its per-target cargo call).
  mkdir -p "fuzz/artifacts/$target"
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0" \
    "$target_dir/x86_64-unknown-linux-gnu/release/$target" "$work_corpus" "fuzz/corpus/$target" \
    -artifact_prefix="fuzz/artifacts/$target/" -max_total_time="$seconds" -timeout="$timeout" \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  elapsed=$(($(date +%s) - started))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  [ -n "$runs" ] || runs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
  runs=${runs:-0}
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  [ "${rate:-0}" -gt 0 ] || rate=$((runs / (elapsed > 0 ? elapsed : 1)))
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
  if [ "$status" -eq 0 ]; then
    result=ok
  else
    failed=1
    result="FAILED (exit $status)"
    if [ -n "$artifact" ]; then
      kind=$(basename "$artifact" | cut -d- -f1)
      result="FAILED: $kind"
    fi
    {
      echo
      echo "fuzz: $target failed; from $log:"
      first=$(grep -n -m 1 -E "panicked at|ERROR: |==[0-9]+==" "$log" | cut -d: -f1)
      sed -n "${first:-1},$((${first:-1} + 24))p" "$log" | sed 's/^/    /'
      grep -E '^SUMMARY' "$log" | sed 's/^/    /' || true
      if [ -n "$artifact" ]; then
        echo "fuzz: the input is $artifact; replay it with"
        echo "    cargo +nightly fuzz run ${build_flags[*]} $target $artifact"
        echo "  and shrink it with"
        echo "    cargo +nightly fuzz tmin ${build_flags[*]} $target $artifact"
      fi
      echo
    } >&2
  fi
  results+=("$(printf '%-20s %12s %8s %10s  %s' "$target" "$runs" "$elapsed" "$rate" "$result")")
done

printf '\n%-20s %12s %8s %10s  %s\n' target runs seconds runs/s result
printf '%s\n' "${results[@]}"
exit "$failed"
