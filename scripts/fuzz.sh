#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of what reads untrusted bytes: the agent protocol's frames,
# job specs through admission, scenario files and trace rows (fuzz/fuzz_targets/).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    each target for SECONDS (default 30), from its corpus
#   RUNS=10000000 scripts/fuzz.sh 0 frame    a count of executions instead of a time
#
# Builds with stable rustc and the same instrumentation cargo-fuzz asks for (sancov with 8-bit
# counters, a PC table and comparison tracing), without a sanitizer, so no nightly toolchain is
# needed; the target CPU stays the default one. Each run starts from the committed corpus
# fuzz/corpus/TARGET; inputs that reach new code go to a scratch folder under the build folder,
# or, with FUZZ_GROW=1, into fuzz/corpus/TARGET itself, which FUZZ_MINIMIZE=1 then shrinks to the
# fewest inputs that cover the same code (libFuzzer's -set_cover_merge) before it is committed. A crash is
# written to fuzz/artifacts/TARGET/ and fails the run. Prints, per target, libFuzzer's last
# status line (executions, coverage) and the count of executions.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame admission scenario import)

export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR=${SPLAI_FUZZ_TARGET:-$PWD/target}
# With an explicit --target, RUSTFLAGS reach the fuzzed code only, not build scripts and macros.
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --locked --release --quiet --target "$host" $(printf -- '--bin %s ' "${targets[@]}")
bin_dir="$CARGO_TARGET_DIR/$host/release"

status=0
for t in "${targets[@]}"; do
  scratch="$CARGO_TARGET_DIR/new-corpus/$t"
  mkdir -p "corpus/$t" "artifacts/$t" "$scratch"
  dirs=("$scratch" "corpus/$t")
  [ -n "${FUZZ_GROW:-}" ] && dirs=("corpus/$t")
  limit=(-max_total_time="$seconds")
  [ -n "${RUNS:-}" ] && limit=(-runs="$RUNS")
  log=$(mktemp)
  if "$bin_dir/$t" "${dirs[@]}" "${limit[@]}" -rss_limit_mb=2048 -timeout=10 \
      -max_len=65536 -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    echo "fuzz $t: $(grep -E '^#[0-9]+' "$log" | tail -1)"
    echo "fuzz $t: $(grep -E 'stat::number_of_executed_units' "$log" | awk '{print $2}') executions, 0 crashes"
  else
    echo "fuzz $t: FAILED"
    tail -40 "$log"
    status=1
  fi
  rm -f "$log"
  if [ -n "${FUZZ_MINIMIZE:-}" ]; then
    merged=$(mktemp -d)
    "$bin_dir/$t" -set_cover_merge=1 "$merged" "corpus/$t" -rss_limit_mb=2048 -timeout=10 >/dev/null 2>&1
    rm -rf "corpus/$t" && mv "$merged" "corpus/$t"
    echo "fuzz $t: corpus minimized to $(find "corpus/$t" -type f | wc -l) inputs"
  fi
done
exit $status
