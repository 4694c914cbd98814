#!/usr/bin/env bash
# Build helm, which the chart tests (operator/tests/helm_*.rs) use to lint and
# render charts/berth, from the Go module proxy at a pinned version.
#
# The binary is cached outside the checkout ($BERTH_CACHE, default
# ~/.cache/berth) in tools/helm-<version>/ and linked into .tools/bin/helm;
# a second run builds nothing.
set -euo pipefail

HELM_VERSION=v3.22.0

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${BERTH_CACHE:-$HOME/.cache/berth}
bin="$root/.tools/bin"
dir="$cache/tools/helm-$HELM_VERSION"

log() { printf '[helm-tools] %s\n' "$*" >&2; }

# The -X flags helm's own Makefile sets: the release as `helm version`, and
# the Kubernetes version of its client-go (v0.Y.Z is Kubernetes 1.Y) as the
# default that `helm template` and `helm lint` check `kubeVersion` against.
# Without them both report v3.x-dev and Kubernetes 1.20.
ldflags() {
  local gomod minor
  gomod=$(cd "${TMPDIR:-/tmp}" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  minor=$(sed -n 's|^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*|\1|p' "$gomod")
  [ -n "$minor" ] || { log "cannot find the client-go version of helm $HELM_VERSION"; exit 1; }
  local flags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  local pkg
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  echo "$flags"
}

if [ ! -x "$dir/helm" ]; then
  command -v go >/dev/null || { log "go is not installed (apt-get install golang-go, Go >= 1.24)"; exit 1; }
  export GOTOOLCHAIN=local CGO_ENABLED=0
  log "building helm $HELM_VERSION (a cold build takes a few minutes)"
  started=$SECONDS
  flags=$(ldflags)
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  GOBIN="$dir.tmp" go install -trimpath -ldflags "$flags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  log "built helm $HELM_VERSION in $((SECONDS - started))s"
fi
mkdir -p "$bin"
ln -sfn "$dir/helm" "$bin/helm"
log "helm $HELM_VERSION ready in $bin"
