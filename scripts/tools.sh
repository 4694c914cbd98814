#!/usr/bin/env bash
# Provision every tool the tests need, idempotently.
#
# Debian packages are installed with apt-get (once). Go-built tools are built
# from the Go module proxy, Rust ones from crates.io, at pinned versions into
# a cache outside the checkout ($BERTH_CACHE, default ~/.cache/berth), so a
# fresh clone reuses them; every tool is then linked into .tools/bin/ of the
# checkout, where the tests look.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

# Pinned versions. The conformance suite has no release tags of its own
# module, so it is pinned to a commit as a Go pseudo-version.
CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111
# MinIO publishes no module versions; pin a commit.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
# The emulators of the azure and gcs drivers' tests: Azurite from npm (3.35.0
# is the newest that runs on Node 20), fake-gcs-server from the Go module proxy.
AZURITE_VERSION=3.35.0
FAKE_GCS_VERSION=v1.56.1
# crictl talks to the test node's containerd (debugging and teardown).
CRICTL_VERSION=v1.34.0
# actionlint checks the release workflow (.github/workflows/), with shellcheck
# for its run: scripts.
ACTIONLINT_VERSION=v1.7.12
# cargo-deny checks the dependency tree's licenses, duplicates and sources
# against deny.toml (`make lint`).
CARGO_DENY_VERSION=0.20.2
# skopeo, CNCF Distribution 2.8, curl and openssl (test keys) for the
# registry's tests; the test
# node's runtime (containerd, runc, the CNI plugins, conntrack for
# kube-proxy) and what `make images` packs (gcc for the pause program,
# busybox-static for the test image, the CA bundle).
APT_PACKAGES=(skopeo docker-registry curl openssl containerd runc containernetworking-plugins conntrack
  iptables iproute2 busybox-static gcc libc6-dev ca-certificates python3 shellcheck)

log() { printf '[tools] %s\n' "$*" >&2; }

# shellcheck source=lib.sh
. "$root/scripts/lib.sh"

apt_install "${APT_PACKAGES[@]}"
ln -sf "$(command -v skopeo)" "$bin/skopeo"
ln -sf /usr/bin/docker-registry "$bin/docker-registry"
go_install oci-conformance github.com/opencontainers/distribution-spec/conformance "$CONFORMANCE_VERSION"
go_install minio github.com/minio/minio "$MINIO_VERSION"
go_install crictl sigs.k8s.io/cri-tools/cmd/crictl "$CRICTL_VERSION"
go_install actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION"
cargo_install cargo-deny cargo-deny "$CARGO_DENY_VERSION"
npm_install azurite-blob azurite "$AZURITE_VERSION" azurite-blob
go_install fake-gcs-server github.com/fsouza/fake-gcs-server "$FAKE_GCS_VERSION"
# CNCF Distribution v3 for the azure and gcs interop tests: its drivers take
# the emulators' endpoints, 2.8's do not.
go_install registry-v3 github.com/distribution/distribution/v3/cmd/registry "$DIST3_VERSION"
# Kubernetes (control plane, node, kubectl) and etcd (a tools module of our own).
"$root/scripts/k8s-tools.sh"
# helm for the chart tests (operator/tests/helm_*.rs).
"$root/scripts/helm-tools.sh"

log "tools ready in $bin: $(find "$bin" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | tr '\n' ' ')"
