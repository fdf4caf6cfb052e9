# cache.sh — where SPLAI's scripts keep what they install or build for the tests.
# SPLAI_CACHE wins; otherwise the XDG cache folder (XDG_CACHE_HOME, default ~/.cache) holds splai/.
# `XDG_CACHE_HOME=$(mktemp -d) scripts/test.sh` therefore starts from nothing, like a fresh
# machine (Go's and pip's own caches follow XDG_CACHE_HOME too).
# shellcheck shell=bash
SPLAI_CACHE="${SPLAI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/splai}"
