#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager from Debian's `kubernetes` source package
# (upstream 1.20.2 with vendor/) and caches them under
#   ${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}/control-plane/<build>/bin/
#
# One local patch: Endpoints validation accepts loopback addresses. The process kubelet gives
# each Pod its own 127.x.y.z address (the only range every machine routes locally without
# root), and upstream rejects 127.0.0.0/8 in Endpoints, so the endpoints controller could
# never publish a Pod.
#
# One vendored library is replaced: github.com/modern-go/reflect2 1.0.1 crashes the API server
# (SIGSEGV in map iteration, e.g. when serving custom resources) when built with Go >= 1.18,
# which is what Debian bookworm has; 1.0.2 (API-compatible, from Debian's
# golang-github-modern-go-reflect2-dev) fixes it. Nothing else changes.
# Idempotent: returns at once when the binaries are cached. Concurrent callers serialise on a lock
# file, so the ~6 minute build runs once. Needs root (or sudo) on a fresh machine for apt.
#
# Usage: scripts/control-plane.sh            build or reuse; prints the bin directory on the last line
set -euo pipefail

K8S_VERSION="1.20.2"
BUILD="$K8S_VERSION-flywheel.1"   # bump when the patch or flags change
DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
CACHE="${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}"
DEST="$CACHE/control-plane/$BUILD"
BIN="$DEST/bin"
WHAT="cmd/kube-apiserver cmd/kube-controller-manager"

log() { echo "[control-plane] $*" >&2; }

have_binaries() {
  [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" ]]
}

if have_binaries; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$DEST"
exec 9>"$DEST/.lock"
if ! flock -n 9; then
  log "another build holds $DEST/.lock; waiting for it"
  flock 9
fi
# The holder of the lock may have finished the build while we waited.
if have_binaries; then
  echo "$BIN"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    log "not root and no sudo: install golang-go rsync etcd-server and a deb-src entry by hand"
  fi
fi

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >&2
  fi
}

# Adds a deb-src entry for bookworm main on the mirror this machine already uses, so that
# `apt-get source` can find the package. Only touches its own file.
ensure_deb_src() {
  local list=/etc/apt/sources.list.d/flywheel-deb-src.sources
  if [[ -f $list ]]; then return; fi
  local uri=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
      | grep -v -e security -e '^$' | grep -i debian | head -n1 || true)
  fi
  if [[ -z $uri && -f /etc/apt/sources.list ]]; then
    uri=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list || true)
  fi
  uri=${uri:-http://deb.debian.org/debian}
  log "adding deb-src entry ($uri bookworm main) in $list"
  printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" | $SUDO tee "$list" >/dev/null
  $SUDO apt-get update >&2
}

apt_install golang-go rsync etcd-server dpkg-dev make golang-github-modern-go-reflect2-dev
ensure_deb_src

WORK="$DEST/build"
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"
log "downloading source package kubernetes=$DEB_VERSION"
if ! apt-get source --download-only "kubernetes=$DEB_VERSION" >&2; then
  # The deb-src file may predate an apt-get update on this machine.
  $SUDO apt-get update >&2
  apt-get source --download-only "kubernetes=$DEB_VERSION" >&2
fi

orig=$(ls kubernetes_*.orig.tar.* | head -n1)
log "unpacking $orig"
mkdir src
tar -xf "$orig" -C src --strip-components=1
cd src
[[ -d vendor ]] || { log "unexpected source layout: no vendor/ in $orig"; exit 1; }

reflect2_src=/usr/share/gocode/src/github.com/modern-go/reflect2
reflect2_dst=vendor/github.com/modern-go/reflect2
[[ -f $reflect2_src/go_above_118.go ]] || { log "$reflect2_src is not reflect2 >= 1.0.2"; exit 1; }
log "replacing $reflect2_dst with reflect2 1.0.2 (Go >= 1.18 fix)"
rm -f "$reflect2_dst"/*.go "$reflect2_dst"/*.s
cp "$reflect2_src"/*.go "$reflect2_dst"/
cp "$reflect2_src"/*.s "$reflect2_dst"/ 2>/dev/null || true
rm -f "$reflect2_dst"/*_test.go

validation=pkg/apis/core/validation/validation.go
log "patching $validation: Endpoints may hold loopback addresses"
sed -i 's|^\tallErrs = append(allErrs, validateNonSpecialIP(address.IP, fldPath.Child("ip"))...)$|\t// flywheel: Pods of the process kubelet live on 127.0.0.0/8.\n\tif !net.ParseIP(address.IP).IsLoopback() {\n\t\tallErrs = append(allErrs, validateNonSpecialIP(address.IP, fldPath.Child("ip"))...)\n\t}|' "$validation"
grep -q 'flywheel: Pods of the process kubelet' "$validation" || { log "patch did not apply to $validation"; exit 1; }

log "building $WHAT (about 6 minutes on 2 cores)"
# GOFLAGS/GOPATH from the caller must not leak into the upstream build.
env -u GOFLAGS GOCACHE="$WORK/go-build" GOPATH="$WORK/gopath" \
  make WHAT="$WHAT" KUBE_BUILD_PLATFORMS=linux/amd64 >&2

out=_output/local/bin/linux/amd64
rm -rf "$BIN.tmp"; mkdir -p "$BIN.tmp"
for b in kube-apiserver kube-controller-manager; do
  [[ -s $out/$b ]] || { log "build did not produce $out/$b"; exit 1; }
  cp "$out/$b" "$BIN.tmp/$b"
done
# Publish atomically: the bin directory appears complete or not at all.
rm -rf "$BIN"
mv "$BIN.tmp" "$BIN"
cd "$DEST"
rm -rf "$WORK"
log "cached in $BIN"
echo "$BIN"
