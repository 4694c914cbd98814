#!/usr/bin/env bash
# `make images`: Berth's images built without a container engine, as OCI
# image layouts under $CARGO_TARGET_DIR/images (default target/images):
#
#   berth-registry, berth-operator   ghcr.io/berth-dev/<name>:v<version>, from the
#                                    release binaries (`make release`) with the
#                                    Dockerfile's runtime contents (rootfs.sh)
#   pause                            berth.test/pause:1, the test node's sandbox image
#   busybox                          berth.test/busybox:1, a small image for test pods
#
# The image configuration (entrypoint, command, user, ports, volumes, labels)
# below must stay as the Dockerfile's final stages declare it; the tests
# compare the two (tests/tests/images.rs).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
out="$target/images"
work="$target/images.work"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
tag="v$version"
oci() { python3 "$root/scripts/images/oci.py" "$@"; }

rm -rf "$work" && mkdir -p "$work" "$out"

for kind in registry operator; do
  "$root/scripts/images/rootfs.sh" "$kind" "$target/release/berth-$kind" "$work/$kind"
done
oci --rootfs "$work/registry" --out "$out/berth-registry" \
  --name ghcr.io/berth-dev/berth-registry --tag "$tag" \
  --entrypoint /usr/local/bin/berth-registry --cmd=serve --cmd=--config --cmd=/etc/berth/config.yml \
  --user 65532:65532 --port 5000/tcp --volume /var/lib/registry \
  --label org.opencontainers.image.title=berth-registry \
  --label "org.opencontainers.image.description=An OCI Distribution registry server, a drop-in for CNCF Distribution" \
  --label org.opencontainers.image.licenses=Apache-2.0
oci --rootfs "$work/operator" --out "$out/berth-operator" \
  --name ghcr.io/berth-dev/berth-operator --tag "$tag" \
  --entrypoint /usr/local/bin/berth-operator \
  --user 65532:65532 --port 8080/tcp \
  --label org.opencontainers.image.title=berth-operator \
  --label "org.opencontainers.image.description=Kubernetes operator that runs berth-registry on every node from one Registry resource" \
  --label org.opencontainers.image.licenses=Apache-2.0

mkdir -p "$work/pause"
gcc -static -O2 -s -o "$work/pause/pause" "$root/scripts/images/pause.c"
oci --rootfs "$work/pause" --out "$out/pause" --name berth.test/pause --tag 1 \
  --entrypoint /pause --user 65535:65535

mkdir -p "$work/busybox/bin" "$work/busybox/tmp"
chmod 1777 "$work/busybox/tmp"
cp /bin/busybox "$work/busybox/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$work/busybox/bin/$applet"
done
oci --rootfs "$work/busybox" --out "$out/busybox" --name berth.test/busybox --tag 1 --cmd sh

rm -rf "$work"
