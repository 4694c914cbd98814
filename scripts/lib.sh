# Shared by the provisioning scripts (scripts/tools.sh, bench/run.sh): where
# tools live and how they are installed. Source it after setting `root` (the
# checkout) and defining `log`.
#
# Go- and Cargo-built tools are cached outside the checkout ($BERTH_CACHE, default
# ~/.cache/berth) in tools/<name>-<version>/, so a fresh clone reuses them,
# and linked into .tools/bin/ of the checkout, where the tests look.

# CNCF Distribution v3, pinned once for the tests and the benchmark.
DIST3_VERSION=v3.1.2

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

# go_install NAME PACKAGE VERSION: build PACKAGE@VERSION once into the cache
# and link it into .tools/bin/NAME.
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

# cargo_install NAME CRATE VERSION: build the crates.io binary CRATE@VERSION
# (its own lock file) once into the cache and link it into .tools/bin/NAME.
cargo_install() {
  local name=$1 crate=$2 version=$3
  local dir="$cache/tools/$name-$version"
  if [ ! -x "$dir/bin/$name" ]; then
    log "building $crate@$version"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    CARGO_TARGET_DIR="$dir.tmp/target" cargo install --locked --quiet --root "$dir.tmp" "$crate@$version"
    rm -rf "$dir.tmp/target"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  ln -sf "$dir/bin/$name" "$bin/$name"
}

# npm_install NAME PACKAGE VERSION BIN: install the npm package PACKAGE@VERSION
# once into the cache and link its executable BIN into .tools/bin/NAME.
npm_install() {
  local name=$1 pkg=$2 version=$3 exe=$4
  local dir="$cache/tools/$name-$version"
  if [ ! -x "$dir/node_modules/.bin/$exe" ]; then
    log "installing $pkg@$version from npm"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    npm install --prefix "$dir.tmp" --no-audit --no-fund --loglevel=error "$pkg@$version"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  ln -sf "$dir/node_modules/.bin/$exe" "$bin/$name"
}
