#!/usr/bin/env bash
# Provision every tool the tests need, idempotently.
#
# Debian packages are installed with apt-get (once). Go-built tools are built
# from the Go module proxy at pinned versions into a cache outside the checkout
# ($BERTH_CACHE, default ~/.cache/berth), so a fresh clone reuses them; every
# tool is then linked into .tools/bin/ of the checkout, where the tests look.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${BERTH_CACHE:-$HOME/.cache/berth}
bin="$root/.tools/bin"
mkdir -p "$bin" "$cache/tools"

# Pinned versions. The conformance suite has no release tags of its own
# module, so it is pinned to a commit as a Go pseudo-version.
CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111
# MinIO publishes no module versions; pin a commit.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
APT_PACKAGES=(skopeo docker-registry curl)

log() { printf '[tools] %s\n' "$*" >&2; }

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_apt_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  ln -sf "$(command -v skopeo)" "$bin/skopeo"
  ln -sf /usr/bin/docker-registry "$bin/docker-registry"
}

# go_install NAME PACKAGE VERSION: build PACKAGE@VERSION once into the cache.
go_install() {
  local name=$1 pkg=$2 version=$3
  local dir="$cache/tools/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    log "building $pkg@$version"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$dir.tmp" go install -trimpath "$pkg@$version"
    mv "$dir.tmp/$(basename "$pkg")" "$dir.tmp/$name" 2>/dev/null || true
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  ln -sf "$dir/$name" "$bin/$name"
}

install_apt_packages
go_install oci-conformance github.com/opencontainers/distribution-spec/conformance "$CONFORMANCE_VERSION"
go_install minio github.com/minio/minio "$MINIO_VERSION"
# kube-apiserver and etcd for the operator's tests (a tools module of our own).
"$root/scripts/k8s-tools.sh"

log "tools ready in $bin: $(ls "$bin" | tr '\n' ' ')"
