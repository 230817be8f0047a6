# syntax=docker/dockerfile:1
# The Flywheel review service: one per DataPipeline feedback loop (run by the operator).
# Build from the repository root:
#   docker build -f docker/review-service.Dockerfile -t flywheel/review-service:0.1.0 .
# checkov:skip=CKV_DOCKER_2:Kubernetes probes the container (the operator sets liveness and readiness probes); a Docker HEALTHCHECK is ignored by the kubelet.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace: the migrations (review-service/migrations) and the review page
# (inference-server/src/http/review.html) are compiled into the binary.
COPY . .
# The cache mounts keep the registry and target dir between builds; the binary is copied out
# of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p flywheel-review-service --bin flywheel-review-service \
 && install -D -m 0755 target/release/flywheel-review-service /out/flywheel-review-service

# glibc and libgcc only; no shell, no package manager. "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/flywheel-review-service /usr/local/bin/flywheel-review-service
USER nonroot
ENTRYPOINT ["/usr/local/bin/flywheel-review-service"]
