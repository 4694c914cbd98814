# shellcheck shell=bash
# Shared by the provisioning scripts (scripts/tools.sh, bench/run.sh): where
# tools live and how they are installed. Source it after setting `root` (the
# checkout) and defining `log`.
#
# Go- and Cargo-built tools are cached outside the checkout ($BERTH_CACHE, default
# ~/.cache/berth) in tools/<name>-<version>/, so a fresh clone reuses them,
# and linked into .tools/bin/ of the checkout, where the tests look.

# CNCF Distribution v3, pinned once for the tests and the benchmark.
# shellcheck disable=SC2034 # used by the scripts that source this file
DIST3_VERSION=v3.1.2

: "${root:?set root to the checkout before sourcing lib.sh}"
cache=${BERTH_CACHE:-$HOME/.cache/berth}
bin="$root/.tools/bin"
mkdir -p "$bin" "$cache/tools"

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install PACKAGE...: install the Debian packages that are missing.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    sudo_if_needed apt-get update -qq
    # A package's service (nginx's, say) may be refused a start by policy-rc.d:
    # the tests and the benchmark run their own processes.
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# cached NAME VERSION FILE COMMAND...: unless the cache's NAME-VERSION
# directory holds the executable FILE, run COMMAND with a fresh directory as
# its last argument and keep that directory as NAME-VERSION (a failed build
# leaves nothing behind); then link FILE into .tools/bin/NAME.
cached() {
  local name=$1 version=$2 file=$3
  shift 3
  local dir="$cache/tools/$name-$version"
  if [ ! -x "$dir/$file" ]; then
    log "building $name $version"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    "$@" "$dir.tmp"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  ln -sf "$dir/$file" "$bin/$name"
}

# go_install NAME PACKAGE VERSION: build PACKAGE@VERSION once into the cache
# and link it into .tools/bin/NAME.
go_install() {
  cached "$1" "$3" "$1" go_build "$1" "$2@$3"
}

# go_build NAME PACKAGE@VERSION DIR: the Go binary of PACKAGE as DIR/NAME.
go_build() {
  local name=$1 pkg=$2 out=$3
  GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$out" go install -trimpath "$pkg"
  local built
  built=$(basename "${pkg%@*}")
  [ "$built" = "$name" ] || mv "$out/$built" "$out/$name"
}

# cargo_install NAME CRATE VERSION: build the crates.io binary CRATE@VERSION
# (its own lock file) once into the cache and link it into .tools/bin/NAME.
cargo_install() {
  cached "$1" "$3" "bin/$1" cargo_build "$2@$3"
}

# cargo_build CRATE@VERSION DIR: `cargo install` of CRATE into DIR/bin.
# Without the crate's fat LTO and single codegen unit: a test tool needs no
# last percent of speed, and on 2 cores this builds four times faster (cargo-deny:
# about 3 minutes instead of 12).
cargo_build() {
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_TARGET_DIR="$2/target" cargo install --locked --quiet --root "$2" "$1"
  rm -rf "$2/target"
}

# npm_install NAME PACKAGE VERSION BIN: install the npm package PACKAGE@VERSION
# once into the cache and link its executable BIN into .tools/bin/NAME.
npm_install() {
  cached "$1" "$3" "node_modules/.bin/$4" npm_build "$2@$3"
}

# npm_build PACKAGE@VERSION DIR: the package installed below DIR.
npm_build() {
  npm install --prefix "$2" --no-audit --no-fund --loglevel=error "$1"
}
