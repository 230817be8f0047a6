#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs dependencies, builds (or reuses) the
# local control plane, builds the workspace binaries the local cluster runs as Pods, runs
# every test of the workspace, and checks that no cluster process outlived the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLYWHEEL_CACHE=${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}
# candle re-reads /proc/cpuinfo on every conv unless the thread count is fixed.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}

echo "==> dependencies (apt, Python venv)"
bash scripts/install-deps.sh
export PATH="$FLYWHEEL_CACHE/venv/bin:$PATH"

echo "==> control plane (kube-apiserver, kube-controller-manager; cached after the first build)"
bash scripts/control-plane.sh

echo "==> cargo fmt --check, cargo clippy (warnings are errors)"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

echo "==> workspace binaries (Pods of the local cluster run them)"
cargo build --workspace --bins

echo "==> cargo test --workspace"
status=0
cargo test --workspace --no-fail-fast || status=$?

echo "==> leftover cluster processes"
# The binary built above (a `cargo run -p` would re-resolve features and rebuild).
"${CARGO_TARGET_DIR:-target}/debug/flywheel-cluster" leftovers || status=1
exit $status
