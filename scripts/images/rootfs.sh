#!/usr/bin/env bash
# Assemble the runtime root filesystem of a Berth image in OUT_DIR: the
# release binary, the shared libraries it links (glibc and libgcc, found with
# ldd), the CA bundle (S3 over HTTPS), /etc/passwd and /etc/group with the
# nonroot user 65532, /tmp, and for the registry its built-in config and its
# data directory owned by 65532. Nothing else: no shell, no package manager.
#
#   scripts/images/rootfs.sh registry|operator BINARY OUT_DIR
#
# The Dockerfile's build stage and `make images` (scripts/images/build.sh)
# both call this script, so the published images and the ones the tests run
# hold the same files; change the contents only here.
set -euo pipefail

kind=$1 binary=$2 out=$3
case "$kind" in registry | operator) ;; *) echo "rootfs.sh: unknown image $kind" >&2; exit 2 ;; esac
[ -x "$binary" ] || { echo "rootfs.sh: $binary is not an executable" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"
# Stripped: symbols are of no use in the image and are most of its size.
install -D -s -m 0755 "$binary" "$out/usr/local/bin/berth-$kind"

# The dynamic loader and every library the binary links, at the paths ldd names.
ldd "$binary" | grep -o '/[^ ]*' | while read -r lib; do
  install -D -m 0755 "$(readlink -f "$lib")" "$out$lib"
done

install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
install -d -m 0755 "$out/etc"
cat >"$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$out/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
printf 'hosts: files dns\n' >"$out/etc/nsswitch.conf"
install -d -m 1777 "$out/tmp"
install -d -m 0700 -o 65532 -g 65532 "$out/home/nonroot"

if [ "$kind" = registry ]; then
  # The configuration a plain container run uses; in Kubernetes the operator
  # mounts its own file over /etc/berth.
  install -d -m 0755 "$out/etc/berth"
  cat >"$out/etc/berth/config.yml" <<'CONFIG'
version: 0.1
log:
  formatter: json
http:
  addr: :5000
storage:
  filesystem:
    rootdirectory: /var/lib/registry
CONFIG
  install -d -m 0750 -o 65532 -g 65532 "$out/var/lib/registry"
fi
