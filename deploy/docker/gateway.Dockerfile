# syntax=docker/dockerfile:1.7
# splai-gateway: the tenants' HTTP API. The image also holds the `splai` CLI, for debugging from
# inside the cluster (`kubectl exec`). Build from the repository root (see deploy/README.md):
#   docker build -f deploy/docker/gateway.Dockerfile -t splai-gateway:dev .
# `--target prebuilt` wraps binaries built outside the image instead, taken from the build
# context's top folder (splai-gateway and splai): scripts/node-images.sh does that for the pod tests.
ARG RUST_VERSION=1.95
# The runtime base; scripts/node-images.sh passes a local stand-in (no registry there).
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=splai-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=splai-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p splai-gateway --bin splai-gateway --bin splai \
    && install -D -m 0755 target/release/splai-gateway /out/splai-gateway \
    && install -D -m 0755 target/release/splai /out/splai

# glibc, libgcc and CA certificates, no shell and no package manager; uid 65532 ("nonroot").
FROM ${RUNTIME_IMAGE} AS runtime
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/splai-gateway"]

FROM runtime AS prebuilt
COPY splai-gateway splai /usr/local/bin/

# The default target: the binaries compiled above.
FROM runtime
COPY --from=build /out/splai-gateway /out/splai /usr/local/bin/
