# syntax=docker/dockerfile:1.7
# splai-operator: the job, scheduler and heartbeat controllers, the agent endpoint and the
# admission webhook. Build from the repository root (see deploy/README.md):
#   docker build -f deploy/docker/operator.Dockerfile -t splai-operator:dev .
# `--target prebuilt` wraps binaries built outside the image instead, taken from the build
# context's top folder (splai-operator): scripts/node-images.sh does that for the pod tests.
ARG RUST_VERSION=1.95
# The runtime base; scripts/node-images.sh passes a local stand-in (no registry there).
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target caches outlive the build, so rebuilding after a source change only
# compiles SPLAI's own crates; the binary is copied out because the cache is not in the layer.
RUN --mount=type=cache,id=splai-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=splai-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p splai-operator --bin splai-operator \
    && install -D -m 0755 target/release/splai-operator /out/splai-operator

# glibc, libgcc and CA certificates, no shell and no package manager; uid 65532 ("nonroot").
FROM ${RUNTIME_IMAGE} AS runtime
USER 65532:65532
# agents, /metrics and probes, the admission webhook (HTTPS)
EXPOSE 7400 8080 9443
ENTRYPOINT ["/usr/local/bin/splai-operator"]

FROM runtime AS prebuilt
COPY splai-operator /usr/local/bin/splai-operator

# The default target: the binary compiled above.
FROM runtime
COPY --from=build /out/splai-operator /usr/local/bin/splai-operator
