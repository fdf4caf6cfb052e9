# syntax=docker/dockerfile:1.7
# splai-worker: the agent each node runs (a DaemonSet). Build from the repository root
# (see deploy/README.md):
#   docker build -f deploy/docker/worker.Dockerfile -t splai-worker:dev .
# `--target prebuilt` wraps binaries built outside the image instead, taken from the build
# context's top folder (splai-worker): scripts/node-images.sh does that for the pod tests.
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=splai-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=splai-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p splai-worker --bin splai-worker \
    && install -D -m 0755 target/release/splai-worker /out/splai-worker

# Not distroless: command tasks run as `setpriv --no-new-privs prlimit ... -- CMD` (util-linux,
# which Debian ships in every image as an essential package) and commonly through /bin/sh.
# Add the tools your tasks need (python, ffmpeg, ...) in an image built FROM this one.
FROM docker.io/library/debian:bookworm-slim AS runtime
# The system roots: object_store's client checks an https:// S3 endpoint against them, and the
# inference clients check remote APIs the same way. bookworm-slim ships none.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=20230311+deb12u1 \
    && rm -rf /var/lib/apt/lists/*
# Fail the build, not the first task, if the sandbox's wrappers ever leave the base image: the
# same chain the agent starts, around /bin/sh.
RUN setpriv --no-new-privs -- prlimit --nofile=64 -- /bin/sh -c true
# Tasks get a private folder under --work-dir; mount a volume there (the root filesystem is
# read-only in the DaemonSet).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/splai-worker"]

FROM runtime AS prebuilt
COPY splai-worker /usr/local/bin/splai-worker

# The default target: the binary compiled above.
FROM runtime
COPY --from=build /out/splai-worker /usr/local/bin/splai-worker
