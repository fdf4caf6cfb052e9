# pip-cache.sh — what the scripts that install a test tool from PyPI into $SPLAI_CACHE share
# (scripts/lib/cache.sh: ${XDG_CACHE_HOME:-~/.cache}/splai unless SPLAI_CACHE is set).
# Source it after setting TOOL (the log prefix), CACHE_ROOT and VENV; then:
#   log MSG / die MSG        messages on stderr, prefixed with [$TOOL]
#   cache_lock               takes $CACHE_ROOT/.lock (waits while another install runs)
#   cache_venv               makes $VENV with python3 -m venv unless it is there
# shellcheck shell=bash

log() { printf '[%s] %s\n' "$TOOL" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$TOOL" "$*" >&2; exit 1; }

cache_lock() {
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.lock"
  if command -v flock >/dev/null; then
    flock -n 9 || { log "another install is running; waiting for $CACHE_ROOT/.lock"; flock 9; }
  fi
}

cache_venv() {
  command -v python3 >/dev/null || die "python3 is missing (apt-get install python3 python3-venv)"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
}
