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
