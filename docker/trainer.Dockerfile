# syntax=docker/dockerfile:1
# The Flywheel trainer: profiles datasets and fine-tunes ONNX models (run by the operator's Jobs).
# Build from the repository root:
#   docker build -f docker/trainer.Dockerfile -t flywheel/trainer:0.1.0 .
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
    cargo build --locked --release -p flywheel-trainer --bin flywheel-trainer \
 && install -D -m 0755 target/release/flywheel-trainer /out/flywheel-trainer

# glibc and libgcc only; no shell, no package manager. "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/flywheel-trainer /usr/local/bin/flywheel-trainer
USER nonroot
ENTRYPOINT ["/usr/local/bin/flywheel-trainer"]
