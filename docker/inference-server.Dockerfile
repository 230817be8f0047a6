# syntax=docker/dockerfile:1
# The Flywheel inference server: serves the champion (and shadow) ONNX models on candle.
# Build from the repository root:
#   docker build -f docker/inference-server.Dockerfile -t flywheel/inference-server:0.1.0 .
# checkov:skip=CKV_DOCKER_2:Kubernetes probes the container (the operator sets liveness and readiness probes); a Docker HEALTHCHECK is ignored by the kubelet.

FROM rust:1.95-bookworm AS build
# candle-onnx compiles ONNX's protobuf definitions with protoc at build time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target dir between builds; the binary is copied out
# of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p flywheel-inference-server --bin flywheel-inference-server \
 && install -D -m 0755 target/release/flywheel-inference-server /out/flywheel-inference-server

# glibc and libgcc only; no shell, no package manager. "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/flywheel-inference-server /usr/local/bin/flywheel-inference-server
USER nonroot
ENTRYPOINT ["/usr/local/bin/flywheel-inference-server"]
