#!/usr/bin/env bash
# s3-testbin.sh — install (once) a local S3-compatible server for the artifact-store tests: moto's
# standalone server (PyPI `moto[server]`) in a virtualenv. The tests start it on loopback and
# point `s3://` artifact URLs at it through AWS_ENDPOINT_URL and AWS_ALLOW_HTTP.
#
# Usage:
#   scripts/s3-testbin.sh           # install if needed; the last line of stdout is the
#                                   # `moto_server` executable
#   scripts/s3-testbin.sh --check   # exit 0 iff it is cached
#
# Layout: ${SPLAI_S3_CACHE:-$SPLAI_CACHE/s3}/venv. A cold install takes about a minute;
# a warm run returns at once. Needs python3 with venv and network access to PyPI.
set -euo pipefail

MOTO_VERSION="5.2.5"

# shellcheck source=lib/cache.sh
. "$(dirname "$0")/lib/cache.sh"
CACHE_ROOT="${SPLAI_S3_CACHE:-$SPLAI_CACHE/s3}"
VENV="$CACHE_ROOT/venv"
SERVER="$VENV/bin/moto_server"
STAMP="$CACHE_ROOT/.installed-moto$MOTO_VERSION"

TOOL=s3-testbin
# shellcheck source=lib/pip-cache.sh
. "$(dirname "$0")/lib/pip-cache.sh"

cached() { [ -f "$STAMP" ] && [ -x "$SERVER" ]; }

if [ "${1:-}" = "--check" ]; then
  cached
  exit $?
fi

cache_lock

if ! cached; then
  cache_venv
  log "installing moto[server] $MOTO_VERSION into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2 \
    || die "pip install failed"
  [ -x "$SERVER" ] || die "moto[server] installed no moto_server"
  touch "$STAMP"
  log "installed"
fi

echo "$SERVER"
