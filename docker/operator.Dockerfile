# syntax=docker/dockerfile:1
# The Flywheel operator: reconciles ModelVersions, DatasetVersions, Deployments and DataPipelines.
# Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t flywheel/operator:0.1.0 .
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
    cargo build --locked --release -p flywheel-operator --bin flywheel-operator \
 && install -D -m 0755 target/release/flywheel-operator /out/flywheel-operator

# glibc and libgcc only; no shell, no package manager. "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/flywheel-operator /usr/local/bin/flywheel-operator
USER nonroot
ENTRYPOINT ["/usr/local/bin/flywheel-operator"]
