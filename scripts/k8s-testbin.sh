#!/usr/bin/env bash
# k8s-testbin.sh — build (once) and cache etcd, kube-apiserver and kubectl for
# SPLAI's integration tests, without Docker or release tarballs: everything is
# compiled from the Go module proxy.
#
# Usage:
#   BIN=$(scripts/k8s-testbin.sh | tail -1)     # build if needed, print bin dir
#   scripts/k8s-testbin.sh --print-bin-dir      # only print the path, never build
#   scripts/k8s-testbin.sh --check              # exit 0 iff cache is complete
#   scripts/k8s-testbin.sh --force              # rebuild even if cached
#   scripts/k8s-testbin.sh --verify             # also smoke-test a cached set
#   scripts/k8s-testbin.sh --no-verify          # skip the smoke test after a build
#
# Layout: ${SPLAI_K8S_CACHE:-$SPLAI_CACHE/k8s}/<k8s>-etcd<etcd>/bin/{etcd,kube-apiserver,kubectl}
# The last line of stdout is always the bin directory; progress goes to stderr.
# A cold build takes ~10-25 min on 2 cores; a warm run returns in well under a second.
#
# Environment:
#   SPLAI_K8S_CACHE        cache root (default $SPLAI_CACHE/k8s; SPLAI_CACHE defaults to
#                          ${XDG_CACHE_HOME:-~/.cache}/splai, see scripts/lib/cache.sh)
#   SPLAI_K8S_BUILD_JOBS   go build -p value (default 2); builds run under nice -n 19
#   SPLAI_K8S_VERIFY=0     skip the post-build smoke test (same as --no-verify)
# A fresh build is smoke-tested (etcd + kube-apiserver on loopback, /readyz == ok)
# before it is published into the cache; a failing build never replaces the cache.
set -euo pipefail

# ---- pinned versions --------------------------------------------------------
K8S_VERSION="v1.37.2"     # newest k8s.io/kubernetes patch on proxy.golang.org
ETCD_VERSION="v3.6.16"    # newest go.etcd.io/etcd/server/v3 v3.6.x on the proxy
MIN_GO_MINOR=26           # k8s v1.37 go.mod says "go 1.26.0"
# -----------------------------------------------------------------------------

K8S_MINOR="${K8S_VERSION#v1.}"; K8S_MINOR="${K8S_MINOR%%.*}"   # 37
STAGING_VERSION="v0.${K8S_VERSION#v1.}"                          # v0.37.2
# shellcheck source=lib/cache.sh
. "$(dirname "$0")/lib/cache.sh"
CACHE_ROOT="${SPLAI_K8S_CACHE:-$SPLAI_CACHE/k8s}"
DEST="$CACHE_ROOT/${K8S_VERSION}-etcd${ETCD_VERSION}"
BIN_DIR="$DEST/bin"
JOBS="${SPLAI_K8S_BUILD_JOBS:-2}"

log() { printf '[k8s-testbin] %s\n' "$*" >&2; }
die() { printf '[k8s-testbin] ERROR: %s\n' "$*" >&2; exit 1; }

MODE=ensure FORCE=0 VERIFY=0 VERIFY_BUILD="${SPLAI_K8S_VERIFY:-1}"
for arg in "$@"; do
  case "$arg" in
    --print-bin-dir) MODE=print ;;
    --check) MODE=check ;;
    --force) FORCE=1 ;;
    --verify) VERIFY=1 VERIFY_BUILD=1 ;;
    --no-verify) VERIFY=0 VERIFY_BUILD=0 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done

# cached_ok: all three binaries exist and report the pinned versions.
cached_ok() {
  local d="$1"
  [[ -x "$d/etcd" && -x "$d/kube-apiserver" && -x "$d/kubectl" ]] || return 1
  # Capture first, then match: `cmd | grep -q` + pipefail fails randomly on SIGPIPE.
  local out
  out="$("$d/etcd" --version 2>/dev/null)" || return 1
  [[ $'\n'"$out"$'\n' == *$'\n'"etcd Version: ${ETCD_VERSION#v}"$'\n'* ]] || return 1
  out="$("$d/kube-apiserver" --version 2>/dev/null)" || return 1
  [[ "$out" == "Kubernetes ${K8S_VERSION}" ]] || return 1
  out="$("$d/kubectl" version --client 2>/dev/null)" || return 1
  [[ $'\n'"$out"$'\n' == *$'\n'"Client Version: ${K8S_VERSION}"$'\n'* ]] || return 1
}

# free_port: ask the kernel for an unused loopback port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $(( 20000 + RANDOM % 20000 ))
}

# smoke_test BIN: start etcd + kube-apiserver on loopback, wait for /readyz, stop both.
# Everything it starts/creates is recorded globally so the EXIT trap can clean up.
SMOKE_PIDS=() SMOKE_WORK="" STAGE=""
stop_smoke() {
  # Newest first (kube-apiserver before etcd): SIGTERM, up to 15s grace, then SIGKILL.
  local i p n
  for (( i=${#SMOKE_PIDS[@]}-1; i>=0; i-- )); do
    p="${SMOKE_PIDS[i]}"
    kill "$p" 2>/dev/null || continue
    for (( n=0; n<75; n++ )); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null && log "pid $p ignored SIGTERM for 15s; killed"
    wait "$p" 2>/dev/null || true
  done
  SMOKE_PIDS=()
  if [[ -n "$SMOKE_WORK" ]]; then rm -rf "$SMOKE_WORK"; SMOKE_WORK=""; fi
}
cleanup() {
  stop_smoke
  if [[ -n "$STAGE" ]]; then rm -rf "$STAGE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

smoke_test() {
  local bin="$1" work cport pport sport i ok=0 api_pid
  command -v openssl >/dev/null || die "openssl not found (needed for the smoke test's throwaway keys; --no-verify skips it)"
  work="$(mktemp -d "${TMPDIR:-/tmp}/splai-k8s-smoke.XXXXXX")"; SMOKE_WORK="$work"
  cport=$(free_port); pport=$(free_port); sport=$(free_port)
  log "smoke test: etcd on 127.0.0.1:$cport, kube-apiserver on https://127.0.0.1:$sport (workdir $work)"

  "$bin/etcd" --name=smoke --data-dir="$work/etcd" --unsafe-no-fsync \
    --listen-client-urls="http://127.0.0.1:$cport" --advertise-client-urls="http://127.0.0.1:$cport" \
    --listen-peer-urls="http://127.0.0.1:$pport" --initial-advertise-peer-urls="http://127.0.0.1:$pport" \
    --initial-cluster="smoke=http://127.0.0.1:$pport" --log-level=error >"$work/etcd.log" 2>&1 &
  SMOKE_PIDS+=($!)

  openssl genrsa -out "$work/sa.key" 2048 2>/dev/null
  openssl rsa -in "$work/sa.key" -pubout -out "$work/sa.pub" 2>/dev/null
  echo "smoke-token,smoke-admin,smoke-admin,system:masters" >"$work/tokens.csv"

  "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$cport" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$sport" \
    --endpoint-reconciler-type=none \
    --cert-dir="$work/certs" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$work/sa.pub" \
    --service-account-signing-key-file="$work/sa.key" \
    --token-auth-file="$work/tokens.csv" \
    --authorization-mode=RBAC \
    >"$work/apiserver.log" 2>&1 &
  api_pid=$!; SMOKE_PIDS+=("$api_pid")

  for i in $(seq 1 120); do
    kill -0 "$api_pid" 2>/dev/null || break
    if "$bin/kubectl" --server="https://127.0.0.1:$sport" --token=smoke-token --insecure-skip-tls-verify \
         get --raw /readyz >"$work/readyz" 2>/dev/null && grep -qx ok "$work/readyz"; then
      ok=1; break
    fi
    sleep 1
  done
  if [[ $ok != 1 ]]; then
    log "---- etcd.log (tail) ----";      tail -20 "$work/etcd.log" >&2 || true
    log "---- apiserver.log (tail) ----"; tail -40 "$work/apiserver.log" >&2 || true
    stop_smoke; return 1
  fi
  log "smoke test: /readyz = ok after ${i}s; kubectl get ns:"
  "$bin/kubectl" --server="https://127.0.0.1:$sport" --token=smoke-token --insecure-skip-tls-verify \
    get namespaces -o name >&2 || ok=0
  stop_smoke
  log "smoke test: etcd and kube-apiserver stopped"
  [[ $ok == 1 ]]
}

if [[ $MODE == print ]]; then echo "$BIN_DIR"; exit 0; fi
if [[ $MODE == check ]]; then cached_ok "$BIN_DIR" && { echo "$BIN_DIR"; exit 0; }; exit 1; fi

if [[ $FORCE == 0 ]] && cached_ok "$BIN_DIR"; then
  log "cached: etcd ${ETCD_VERSION}, kube-apiserver/kubectl ${K8S_VERSION}"
  if [[ $VERIFY == 1 ]]; then smoke_test "$BIN_DIR" || die "smoke test failed"; fi
  echo "$BIN_DIR"; exit 0
fi

# ---- preflight ----------------------------------------------------------------
command -v go >/dev/null || die "go not found: install Go 1.${MIN_GO_MINOR}+ (https://go.dev/dl/) and put it on PATH"
go_ver="$(go env GOVERSION)"            # e.g. go1.26.8
go_minor="${go_ver#go1.}"; go_minor="${go_minor%%.*}"; go_minor="${go_minor%%[!0-9]*}"
if [[ -z "$go_minor" || "$go_minor" -lt "$MIN_GO_MINOR" ]] && [[ "$(go env GOTOOLCHAIN)" == local* ]]; then
  die "$go_ver is too old: kubernetes ${K8S_VERSION} needs Go 1.${MIN_GO_MINOR}+ (install a newer Go or set GOTOOLCHAIN=auto)"
fi

mkdir -p "$CACHE_ROOT"
# Serialise concurrent invocations (e.g. several test binaries starting at once).
exec 9>"$CACHE_ROOT/.lock"
if command -v flock >/dev/null; then
  flock -n 9 || { log "another build is running; waiting for lock $CACHE_ROOT/.lock"; flock 9; }
  if [[ $FORCE == 0 ]] && cached_ok "$BIN_DIR"; then   # someone else built it meanwhile
    log "cached (built by a concurrent run)"
    if [[ $VERIFY == 1 ]]; then smoke_test "$BIN_DIR" || die "smoke test failed"; fi
    echo "$BIN_DIR"; exit 0
  fi
fi

STAGE="$(mktemp -d "$CACHE_ROOT/.build-${K8S_VERSION}-XXXXXX")"   # same fs as DEST => atomic rename
mkdir -p "$STAGE/out/bin" "$STAGE/etcd-mod" "$STAGE/k8s-mod"

export GOWORK=off CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath -p=$JOBS"
export GONOSUMDB="${GONOSUMDB:-}" GOPROXY="${GOPROXY:-$(go env GOPROXY)}"
gobuild() { nice -n 19 go "$@"; }
t0=$SECONDS
log "building into $STAGE with $go_ver (go -p=$JOBS, nice 19); cold build takes 10-25 min"

# ---- etcd ---------------------------------------------------------------------
# `go install go.etcd.io/etcd/server/v3@...` refuses because of replace lines, so
# use a throwaway module that merely requires it.
(
  cd "$STAGE/etcd-mod"
  go mod init splai.local/etcd-testbin >/dev/null 2>&1
  log "etcd: go get go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
  gobuild get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >&2
  log "etcd: go build"
  gobuild build -ldflags "-s -w" -o "$STAGE/out/bin/etcd" go.etcd.io/etcd/server/v3 >&2
) || die "etcd ${ETCD_VERSION} build failed (see output above)"
log "etcd built in $((SECONDS - t0))s: $("$STAGE/out/bin/etcd" --version | head -1)"

# ---- kube-apiserver + kubectl -------------------------------------------------
# k8s.io/kubernetes requires its staging repos at v0.0.0 (satisfied in-tree by
# ./staging replaces). Map each one to the published v0.<minor>.<patch> tag.
t1=$SECONDS
(
  cd "$STAGE/k8s-mod"
  go mod init splai.local/k8s-testbin >/dev/null 2>&1
  log "kubernetes: go mod download k8s.io/kubernetes@${K8S_VERSION}"
  gomod="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$gomod" ]] || die "could not download go.mod of k8s.io/kubernetes@${K8S_VERSION}"
  staging="$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$gomod" | sort -u)"
  [[ -n "$staging" ]] || die "no v0.0.0 staging requirements found in $gomod"
  {
    echo
    echo "replace ("
    for m in $staging; do echo "	$m => $m $STAGING_VERSION"; done
    echo ")"
  } >>go.mod
  log "kubernetes: $(wc -w <<<"$staging") staging modules pinned to $STAGING_VERSION"
  log "kubernetes: go get cmd/kube-apiserver cmd/kubectl @${K8S_VERSION}"
  gobuild get "k8s.io/kubernetes/cmd/kube-apiserver@${K8S_VERSION}" "k8s.io/kubernetes/cmd/kubectl@${K8S_VERSION}" >&2
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${K8S_MINOR}"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  log "kubernetes: go build kube-apiserver"
  gobuild build -ldflags "$ld" -o "$STAGE/out/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
  log "kubernetes: go build kubectl"
  gobuild build -ldflags "$ld" -o "$STAGE/out/bin/kubectl" k8s.io/kubernetes/cmd/kubectl >&2
) || die "kubernetes ${K8S_VERSION} build failed (see output above)"
log "kube-apiserver + kubectl built in $((SECONDS - t1))s"

cached_ok "$STAGE/out/bin" || {
  "$STAGE/out/bin/etcd" --version >&2 || true
  "$STAGE/out/bin/kube-apiserver" --version >&2 || true
  "$STAGE/out/bin/kubectl" version --client >&2 || true
  die "built binaries do not report the pinned versions"
}
if [[ $VERIFY_BUILD == 1 ]]; then smoke_test "$STAGE/out/bin" || die "smoke test failed; cache not updated (--no-verify skips it)"; fi

# ---- publish atomically -------------------------------------------------------
{
  echo "k8s=${K8S_VERSION} etcd=${ETCD_VERSION} go=${go_ver}"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ) seconds=$((SECONDS - t0))"
} >"$STAGE/out/BUILD_INFO"
if [[ -e "$DEST" ]]; then mv "$DEST" "$STAGE/old"; fi   # stale/partial entry from an older script
mv -T "$STAGE/out" "$DEST"
log "done in $((SECONDS - t0))s: $BIN_DIR"
echo "$BIN_DIR"
