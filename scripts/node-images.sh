#!/usr/bin/env bash
# node-images.sh — the container images of the one-node test cluster (scripts/node-up.sh), made
# on this machine because no registry can be reached:
#   - docker.io/library/debian:bookworm-slim  a Debian bookworm root made by debootstrap (cached);
#   - localhost/splai/cc-debian12:nonroot     the stand-in for gcr.io/distroless/cc-debian12:nonroot
#                                             (glibc, libgcc, CA certificates, user 65532), cached;
#   - registry.k8s.io/pause:3.10.2            kubernetes' own pause.c, compiled static (cached);
#   - with --splai DIR: docker.io/library/splai-{operator,gateway,worker}:dev, built by buildah
#     from deploy/docker/*.Dockerfile's target `prebuilt`: the Dockerfiles' runtime stages
#     around the binaries in DIR (splai-operator, splai-gateway, splai, splai-worker; release or
#     debug builds: their debug info is stripped from the images' copies).
#   - with --builder: docker.io/library/rust:<this machine's rustc version>-slim-bookworm, the
#     build stage's base, made from debian:bookworm-slim, gcc and this machine's Rust toolchain
#     (`rustc --print sysroot`), so the Dockerfiles' default (compiling) targets build here too:
#       buildah build -f deploy/docker/operator.Dockerfile --pull=never \
#         --build-arg RUNTIME_IMAGE=localhost/splai/cc-debian12:nonroot -t splai-operator:dev .
# Each image is written as an OCI archive <dir>/<name>.tar, which scripts/node-up.sh imports into
# containerd's k8s.io namespace.
#
# Usage:
#   DIR=$(scripts/node-images.sh | tail -1)               # base images, built once
#   scripts/node-images.sh --splai target/debug           # also the SPLAI images (each run)
#   scripts/node-images.sh --check                        # exit 0 iff the base images are cached
# The last line of stdout is the images folder; progress goes to stderr. Needs root (debootstrap,
# buildah), debootstrap, buildah and gcc (scripts/node-testbin.sh installs the first two).
#
# Environment:
#   SPLAI_NODE_CACHE   cache root (default $SPLAI_CACHE/node); images go to <root>/images
#   SPLAI_DEBIAN_MIRROR  default http://deb.debian.org/debian
set -euo pipefail

# ---- pinned versions --------------------------------------------------------
SUITE=bookworm
PAUSE_VERSION=3.10.2      # k8s v1.37.2 build/pause/Makefile TAG, kubeadm's PauseVersion
K8S_VERSION=v1.37.2       # where pause.c comes from (the Go module k8s.io/kubernetes)
# -----------------------------------------------------------------------------

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=lib/cache.sh
. "$ROOT/scripts/lib/cache.sh"
CACHE_ROOT="${SPLAI_NODE_CACHE:-$SPLAI_CACHE/node}"
DIR="$CACHE_ROOT/images"
MIRROR="${SPLAI_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_IMAGES=(debian-bookworm-slim cc-debian12-nonroot pause)

log() { printf '[node-images] %s\n' "$*" >&2; }
die() { printf '[node-images] ERROR: %s\n' "$*" >&2; exit 1; }

MODE=ensure SPLAI_BIN="" BUILDER=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --check) MODE=check ;;
    --print-dir) MODE=print ;;
    --splai) SPLAI_BIN="$(cd "${2:?--splai needs a folder}" && pwd)"; shift ;;
    --builder) BUILDER=1 ;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

base_ok() { local i; for i in "${BASE_IMAGES[@]}"; do [[ -s "$DIR/$i.tar" ]] || return 1; done; }
if [[ $MODE == print ]]; then echo "$DIR"; exit 0; fi
if [[ $MODE == check ]]; then base_ok && { echo "$DIR"; exit 0; }; exit 1; fi

[[ $(id -u) == 0 ]] || die "needs root (debootstrap and buildah's storage)"
for tool in buildah debootstrap gcc go; do command -v "$tool" >/dev/null || die "$tool not found (scripts/node-testbin.sh installs buildah and debootstrap)"; done
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9

WORK=""
CTRS=()
cleanup() {
  local c
  for c in "${CTRS[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
  if [[ -n "$WORK" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
WORK="$(mktemp -d "$DIR/.work-XXXXXX")"

# save NAME IMAGE: write IMAGE from buildah's storage as the OCI archive NAME.tar, atomically.
save() {
  rm -f "$WORK/$1.tar"
  buildah push -q "$2" "oci-archive:$WORK/$1.tar:$2" >&2
  mv -f "$WORK/$1.tar" "$DIR/$1.tar"
}

# ---- debian:bookworm-slim ----------------------------------------------------
if [[ ! -s "$DIR/debian-bookworm-slim.tar" ]]; then
  t=$SECONDS
  log "debootstrap --variant=minbase $SUITE from $MIRROR"
  nice -n 19 debootstrap --variant=minbase "$SUITE" "$WORK/rootfs" "$MIRROR" >&2 \
    || die "debootstrap $SUITE failed (see its output above)"
  # As in Docker's debian images: the same suites, no caches, no documentation kept.
  rm -f "$WORK/rootfs/etc/apt/sources.list"
  cat >"$WORK/rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  chroot "$WORK/rootfs" apt-get clean
  rm -rf "$WORK/rootfs/var/lib/apt/lists/"* "$WORK/rootfs/var/cache/apt/"*.bin \
    "$WORK/rootfs/usr/share/doc/"* "$WORK/rootfs/usr/share/man/"* "$WORK/rootfs/var/log/"*
  tar -C "$WORK/rootfs" --numeric-owner -cf "$WORK/rootfs.tar" .
  rm -rf "$WORK/rootfs"
  c=$(buildah from scratch); CTRS+=("$c")
  buildah add "$c" "$WORK/rootfs.tar" / >/dev/null
  buildah config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  buildah commit -q "$c" docker.io/library/debian:bookworm-slim >/dev/null
  save debian-bookworm-slim docker.io/library/debian:bookworm-slim
  log "debian:bookworm-slim made in $((SECONDS - t))s"
fi
buildah inspect docker.io/library/debian:bookworm-slim >/dev/null 2>&1 \
  || buildah pull -q "oci-archive:$DIR/debian-bookworm-slim.tar" >/dev/null

# ---- the distroless stand-in ---------------------------------------------------
if [[ ! -s "$DIR/cc-debian12-nonroot.tar" ]]; then
  t=$SECONDS
  c=$(buildah from --pull=never docker.io/library/debian:bookworm-slim); CTRS+=("$c")
  buildah run --network host --env DEBIAN_FRONTEND=noninteractive "$c" -- sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*' >&2
  # distroless' "nonroot" user and group.
  buildah run "$c" -- sh -c 'echo "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" >>/etc/passwd && echo "nonroot:x:65532:" >>/etc/group && mkdir -p /home/nonroot && chown 65532:65532 /home/nonroot'
  buildah config --user 65532:65532 --workingdir /home/nonroot --cmd '' "$c"
  buildah commit -q "$c" localhost/splai/cc-debian12:nonroot >/dev/null
  save cc-debian12-nonroot localhost/splai/cc-debian12:nonroot
  log "cc-debian12:nonroot stand-in made in $((SECONDS - t))s"
fi
buildah inspect localhost/splai/cc-debian12:nonroot >/dev/null 2>&1 \
  || buildah pull -q "oci-archive:$DIR/cc-debian12-nonroot.tar" >/dev/null

# ---- pause -----------------------------------------------------------------------
if [[ ! -s "$DIR/pause.tar" ]]; then
  src="$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" 2>/dev/null | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$src/build/pause/linux/pause.c" ]] || die "pause.c not found in k8s.io/kubernetes@${K8S_VERSION} ($src)"
  gcc -Os -static -DVERSION="$PAUSE_VERSION" -o "$WORK/pause" "$src/build/pause/linux/pause.c"
  strip "$WORK/pause"
  c=$(buildah from scratch); CTRS+=("$c")
  buildah copy "$c" "$WORK/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  buildah commit -q "$c" "registry.k8s.io/pause:${PAUSE_VERSION}" >/dev/null
  save pause "registry.k8s.io/pause:${PAUSE_VERSION}"
  log "pause ${PAUSE_VERSION} made"
fi

# ---- the build stage's base, from this machine's toolchain ------------------------
if [[ $BUILDER == 1 ]]; then
  t=$SECONDS
  sysroot="$(rustc --print sysroot)"
  rust_version="$(rustc --version | awk '{print $2}')"      # 1.95.0
  tag="docker.io/library/rust:${rust_version%.*}-slim-bookworm"
  c=$(buildah from --pull=never docker.io/library/debian:bookworm-slim); CTRS+=("$c")
  # As the official rust:slim images: gcc and libc6-dev to link, CA certificates for crates.io.
  buildah run --network host --env DEBIAN_FRONTEND=noninteractive "$c" -- sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends gcc libc6-dev ca-certificates && rm -rf /var/lib/apt/lists/*' >&2
  buildah copy "$c" "$sysroot" /usr/local/rust >/dev/null
  buildah config --env CARGO_HOME=/usr/local/cargo --env RUSTUP_HOME=/usr/local/rustup \
    --env PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  buildah run "$c" -- rustc --version >&2
  buildah commit -q "$c" "$tag" >/dev/null
  log "$tag made from $sysroot in $((SECONDS - t))s"
fi

# ---- SPLAI's images around prebuilt binaries ---------------------------------------
if [[ -n "$SPLAI_BIN" ]]; then
  ctx="$WORK/context"; mkdir -p "$ctx"
  for b in splai-operator splai-gateway splai splai-worker; do
    [[ -x "$SPLAI_BIN/$b" ]] || die "$SPLAI_BIN/$b is missing: cargo build -p splai-operator -p splai-gateway -p splai-worker"
    cp "$SPLAI_BIN/$b" "$ctx/$b"
    strip --strip-debug "$ctx/$b"   # a debug build's 280 MB are 60 MB without it
  done
  for image in operator gateway worker; do
    t=$SECONDS
    # --layers: the worker's apt-get step is cached, so a new binary only adds its COPY layer.
    buildah build -q --layers --pull=never --network host \
      --target prebuilt --build-arg RUNTIME_IMAGE=localhost/splai/cc-debian12:nonroot \
      -f "$ROOT/deploy/docker/$image.Dockerfile" -t "docker.io/library/splai-$image:dev" "$ctx" >&2 \
      || die "buildah build of deploy/docker/$image.Dockerfile failed"
    save "splai-$image" "docker.io/library/splai-$image:dev"
    log "splai-$image:dev built in $((SECONDS - t))s"
  done
fi
echo "$DIR"
