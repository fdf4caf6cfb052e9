#!/usr/bin/env bash
# schemathesis-testbin.sh — install (once) schemathesis, the property-based API tester, for the
# gateway's bad-request test (gateway/tests/schemathesis.rs): it reads the gateway's OpenAPI
# document and sends generated valid and invalid requests, checking each answer.
#
# Usage:
#   scripts/schemathesis-testbin.sh           # install if needed; the last line of stdout is the
#                                             # `schemathesis` executable
#   scripts/schemathesis-testbin.sh --check   # exit 0 iff it is cached
#
# Layout: ${SPLAI_SCHEMATHESIS_CACHE:-$SPLAI_CACHE/schemathesis}/venv. A cold install takes about
# a minute; a warm run returns at once. Needs python3 with venv and network access to PyPI.
set -euo pipefail

SCHEMATHESIS_VERSION="4.32.5"

# shellcheck source=lib/cache.sh
. "$(dirname "$0")/lib/cache.sh"
CACHE_ROOT="${SPLAI_SCHEMATHESIS_CACHE:-$SPLAI_CACHE/schemathesis}"
VENV="$CACHE_ROOT/venv"
TOOL_BIN="$VENV/bin/schemathesis"
STAMP="$CACHE_ROOT/.installed-schemathesis$SCHEMATHESIS_VERSION"

TOOL=schemathesis-testbin
# shellcheck source=lib/pip-cache.sh
. "$(dirname "$0")/lib/pip-cache.sh"

cached() { [ -f "$STAMP" ] && [ -x "$TOOL_BIN" ]; }

if [ "${1:-}" = "--check" ]; then
  cached
  exit $?
fi

cache_lock

if ! cached; then
  cache_venv
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2 \
    || die "pip install failed"
  [ -x "$TOOL_BIN" ] || die "schemathesis installed no schemathesis executable"
  touch "$STAMP"
  log "installed"
fi

echo "$TOOL_BIN"
