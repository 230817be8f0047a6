#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs dependencies, prepares cached
# artefacts outside the repository, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLYWHEEL_CACHE=${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}
# candle re-reads /proc/cpuinfo on every conv unless the thread count is fixed.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}

bash scripts/install-deps.sh
export PATH="$FLYWHEEL_CACHE/venv/bin:$PATH"

echo "==> cargo test --workspace"
cargo test --workspace --no-fail-fast
