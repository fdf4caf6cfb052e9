#!/usr/bin/env bash
# node-testbin.sh — build (once) and cache the parts of a one-node Kubernetes cluster for SPLAI's
# pod tests, without Docker, kind or release tarballs: kubelet, kube-controller-manager,
# kube-scheduler and kube-proxy are compiled from the Go module proxy with the same recipe and
# version as scripts/k8s-testbin.sh (which provides etcd, kube-apiserver and kubectl); CoreDNS is
# compiled from the Go module proxy; containerd, runc, the CNI plugins, iptables and debootstrap
# come from Debian's packages (installed with apt-get when missing and running as root).
#
# Usage:
#   BIN=$(scripts/node-testbin.sh | tail -1)     # build if needed, print bin dir
#   scripts/node-testbin.sh --print-bin-dir      # only print the path, never build
#   scripts/node-testbin.sh --check              # exit 0 iff cache and packages are complete
#   scripts/node-testbin.sh --force              # rebuild even if cached
#
# Layout: ${SPLAI_NODE_CACHE:-$SPLAI_CACHE/node}/<k8s>-coredns<coredns>/bin/
#           {kubelet,kube-controller-manager,kube-scheduler,kube-proxy,coredns}
# The last line of stdout is always the bin directory; progress goes to stderr.
# The base image (a Debian bookworm root made by debootstrap) is built by scripts/node-images.sh.
#
# Environment:
#   SPLAI_NODE_CACHE        cache root (default $SPLAI_CACHE/node, see scripts/lib/cache.sh)
#   SPLAI_K8S_BUILD_JOBS    go build -p value (default 2); builds run under nice -n 19
set -euo pipefail

# ---- pinned versions --------------------------------------------------------
K8S_VERSION="v1.37.2"     # same as scripts/k8s-testbin.sh: one cluster, one version
COREDNS_VERSION="v1.14.7" # CoreDNS on proxy.golang.org
MIN_GO_MINOR=26
# Debian (bookworm) packages: containerd 1.6, runc, CNI plugins (bridge, host-local, loopback,
# portmap), iptables for kube-proxy, conntrack, debootstrap and buildah for the images.
DEB_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack debootstrap buildah)
# -----------------------------------------------------------------------------

K8S_MINOR="${K8S_VERSION#v1.}"; K8S_MINOR="${K8S_MINOR%%.*}"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
# shellcheck source=lib/cache.sh
. "$(dirname "$0")/lib/cache.sh"
CACHE_ROOT="${SPLAI_NODE_CACHE:-$SPLAI_CACHE/node}"
DEST="$CACHE_ROOT/${K8S_VERSION}-coredns${COREDNS_VERSION}"
BIN_DIR="$DEST/bin"
JOBS="${SPLAI_K8S_BUILD_JOBS:-2}"
K8S_BINS=(kubelet kube-controller-manager kube-scheduler kube-proxy)
COREDNS_PLUGINS=(bind cache errors forward health kubernetes loadbalance log loop ready reload)

log() { printf '[node-testbin] %s\n' "$*" >&2; }
die() { printf '[node-testbin] ERROR: %s\n' "$*" >&2; exit 1; }

MODE=ensure FORCE=0
for arg in "$@"; do
  case "$arg" in
    --print-bin-dir) MODE=print ;;
    --check) MODE=check ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done

# packages_ok: the Debian packages' programs are on this machine.
packages_ok() {
  local p
  for p in containerd runc iptables conntrack debootstrap buildah; do command -v "$p" >/dev/null || return 1; done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] || return 1
}

# cached_ok DIR: every binary exists and reports the pinned version.
cached_ok() {
  local d="$1" b out
  for b in "${K8S_BINS[@]}"; do
    [[ -x "$d/$b" ]] || return 1
    out="$("$d/$b" --version 2>/dev/null)" || return 1
    [[ "$out" == "Kubernetes ${K8S_VERSION}" ]] || return 1
  done
  [[ -x "$d/coredns" ]] || return 1
  out="$("$d/coredns" -version 2>/dev/null)" || return 1
  [[ "$out" == *"CoreDNS-${COREDNS_VERSION#v}"* ]] || return 1
}

install_packages() {
  packages_ok && return 0
  [[ $(id -u) == 0 ]] || die "missing Debian packages; as root run: apt-get install ${DEB_PACKAGES[*]}"
  command -v apt-get >/dev/null || die "missing packages (${DEB_PACKAGES[*]}) and no apt-get to install them"
  log "apt-get install ${DEB_PACKAGES[*]}"
  # Debian starts containerd on install where systemd runs; the cluster starts its own.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${DEB_PACKAGES[@]}" >&2 \
    || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${DEB_PACKAGES[@]}" >&2; } \
    || die "apt-get install ${DEB_PACKAGES[*]} failed"
  packages_ok || die "packages installed but containerd/runc/CNI plugins are still missing"
}

STAGE=""
cleanup() { if [[ -n "$STAGE" ]]; then rm -rf "$STAGE"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $MODE == print ]]; then echo "$BIN_DIR"; exit 0; fi
if [[ $MODE == check ]]; then cached_ok "$BIN_DIR" && packages_ok && { echo "$BIN_DIR"; exit 0; }; exit 1; fi

install_packages
if [[ $FORCE == 0 ]] && cached_ok "$BIN_DIR"; then
  log "cached: ${K8S_BINS[*]} ${K8S_VERSION}, coredns ${COREDNS_VERSION}"
  echo "$BIN_DIR"; exit 0
fi

command -v go >/dev/null || die "go not found: install Go 1.${MIN_GO_MINOR}+ and put it on PATH"
go_ver="$(go env GOVERSION)"
go_minor="${go_ver#go1.}"; go_minor="${go_minor%%.*}"; go_minor="${go_minor%%[!0-9]*}"
if [[ -z "$go_minor" || "$go_minor" -lt "$MIN_GO_MINOR" ]] && [[ "$(go env GOTOOLCHAIN)" == local* ]]; then
  die "$go_ver is too old: kubernetes ${K8S_VERSION} needs Go 1.${MIN_GO_MINOR}+"
fi

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock"
if command -v flock >/dev/null; then
  flock -n 9 || { log "another build is running; waiting for lock $CACHE_ROOT/.lock"; flock 9; }
  if [[ $FORCE == 0 ]] && cached_ok "$BIN_DIR"; then log "cached (built by a concurrent run)"; echo "$BIN_DIR"; exit 0; fi
fi

STAGE="$(mktemp -d "$CACHE_ROOT/.build-${K8S_VERSION}-XXXXXX")"
mkdir -p "$STAGE/out/bin" "$STAGE/k8s-mod" "$STAGE/coredns-mod"
export GOWORK=off CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath -p=$JOBS"
export GOPROXY="${GOPROXY:-$(go env GOPROXY)}"
gobuild() { nice -n 19 go "$@"; }
t0=$SECONDS
log "building into $STAGE with $go_ver (go -p=$JOBS, nice 19); a cold build takes 15-30 min"

# ---- kubelet, kube-controller-manager, kube-scheduler, kube-proxy --------------
# The same throwaway module as k8s-testbin.sh: staging repos mapped to v0.<minor>.<patch>.
(
  cd "$STAGE/k8s-mod"
  go mod init splai.local/node-testbin >/dev/null 2>&1
  gomod="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$gomod" ]] || die "could not download go.mod of k8s.io/kubernetes@${K8S_VERSION}"
  staging="$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$gomod" | sort -u)"
  [[ -n "$staging" ]] || die "no v0.0.0 staging requirements found in $gomod"
  { echo; echo "replace ("; for m in $staging; do echo "	$m => $m $STAGING_VERSION"; done; echo ")"; } >>go.mod
  pkgs=(); for b in "${K8S_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b@${K8S_VERSION}"); done
  log "kubernetes: go get ${pkgs[*]}"
  gobuild get "${pkgs[@]}" >&2
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${K8S_MINOR}"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for b in "${K8S_BINS[@]}"; do
    t=$SECONDS
    log "kubernetes: go build $b"
    gobuild build -ldflags "$ld" -o "$STAGE/out/bin/$b" "k8s.io/kubernetes/cmd/$b" >&2
    log "kubernetes: $b built in $((SECONDS - t))s"
  done
) || die "kubernetes ${K8S_VERSION} node build failed (see output above)"

# ---- CoreDNS ------------------------------------------------------------------
# Built from a small main that imports only the plugins a cluster's DNS uses: those of
# scripts/node-up.sh's Corefile (bind, errors, kubernetes, forward, cache) and the rest of kind's
# default Corefile but prometheus (health, ready, log, loop, reload, loadbalance). CoreDNS's own main imports every plugin, which pulls in the cloud
# providers' SDKs (route53, azure, clouddns) and doubled the build time for nothing used here.
t=$SECONDS
(
  cd "$STAGE/coredns-mod"
  go mod init splai.local/coredns-testbin >/dev/null 2>&1
  {
    echo 'package main'
    echo
    echo 'import ('
    echo '	"github.com/coredns/coredns/coremain"'
    for p in "${COREDNS_PLUGINS[@]}"; do echo "	_ \"github.com/coredns/coredns/plugin/$p\""; done
    echo ')'
    echo
    echo 'func main() { coremain.Run() }'
  } >main.go
  log "coredns: go get github.com/coredns/coredns@${COREDNS_VERSION} (plugins: ${COREDNS_PLUGINS[*]})"
  gobuild get "github.com/coredns/coredns@${COREDNS_VERSION}" >&2
  gobuild mod tidy >&2
  gobuild build -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=${COREDNS_VERSION}" \
    -o "$STAGE/out/bin/coredns" . >&2
) || die "coredns ${COREDNS_VERSION} build failed (see output above)"
log "coredns built in $((SECONDS - t))s"

cached_ok "$STAGE/out/bin" || die "built binaries do not report the pinned versions"
{
  echo "k8s=${K8S_VERSION} coredns=${COREDNS_VERSION} go=${go_ver}"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ) seconds=$((SECONDS - t0))"
} >"$STAGE/out/BUILD_INFO"
if [[ -e "$DEST" ]]; then mv "$DEST" "$STAGE/old"; fi
mv -T "$STAGE/out" "$DEST"
log "done in $((SECONDS - t0))s: $BIN_DIR"
echo "$BIN_DIR"
