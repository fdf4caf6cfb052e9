# syntax=docker/dockerfile:1.7
# splai-gateway: the tenants' HTTP API. The image also holds the `splai` CLI, for debugging from
# inside the cluster (`kubectl exec`). Build from the repository root (see deploy/README.md):
#   docker build -f deploy/docker/gateway.Dockerfile -t splai-gateway:dev .
ARG RUST_VERSION=1.95
# BINARIES=prebuilt copies release binaries built outside the image from the build context's top
# folder instead of compiling them (scripts/node-images.sh, for the pod tests); the default
# compiles them in the build stage below, and the other stage is never built.
ARG BINARIES=build
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

FROM scratch AS prebuilt
COPY splai-gateway /out/splai-gateway
COPY splai /out/splai

FROM ${BINARIES} AS binaries

# glibc, libgcc and CA certificates, no shell and no package manager; uid 65532 ("nonroot").
FROM ${RUNTIME_IMAGE}
COPY --from=binaries /out/splai-gateway /out/splai /usr/local/bin/
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/splai-gateway"]
