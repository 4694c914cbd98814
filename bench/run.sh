#!/usr/bin/env bash
# `make bench`: Berth side by side with CNCF Distribution 2.8 and v3 (and the
# machine's ceilings), on loopback, on this machine. See bench/README.md.
#
# Provisions what the benchmark needs (idempotent, cached like scripts/tools.sh),
# builds berth-registry in release mode, then runs bench/bench.py, which writes
# bench/results/<date>.md.
#
# Arguments are passed to bench/bench.py; `bench/run.sh --profile FIGURE` runs
# one figure's load on Berth alone under perf instead (see bench/README.md).
#
# Environment:
#   BENCH_ROUNDS     interleaved rounds (default 3)
#   BENCH_DURATION   seconds per wrk run (default 5)
#   BENCH_DRIVERS    fs,s3,nodecache (default) or some of them
#   BENCH_PULL_THROUGH 1 (default): also run bench/pull_through.py (Berth
#                    against Distribution's proxy mode, results in
#                    bench/results/<date>-pull-through.md); 0: skip
#   BENCH_WORK       scratch directory (default: a new one under /tmp); the
#                    images and storage in it are removed at the end, the logs
#                    (gzipped), wrk outputs and commands.log are kept
#   BERTH_CACHE      tool cache (default ~/.cache/berth), as for make tools
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

# Pinned versions (Distribution v3's, DIST3_VERSION, is in scripts/lib.sh).
# zot: module paths looked up on the Go module proxy; the run says why zot is not in it.
ZOT_MODULES=(zotregistry.dev/zot/v2 zotregistry.dev/zot zotregistry.io/zot github.com/project-zot/zot)
APT_PACKAGES=(wrk nginx-light skopeo docker-registry curl)

log() { printf '[bench] %s\n' "$*" >&2; }

# shellcheck source=../scripts/lib.sh
. "$root/scripts/lib.sh"

# Debian packages: wrk, nginx (sendfile ceiling), and the test tools.
apt_install "${APT_PACKAGES[@]}"

# perf, for `bench/run.sh --profile FIGURE`.
if [[ " $* " == *" --profile"* ]] && ! command -v perf >/dev/null; then
  apt_install linux-perf
fi

# MinIO (and the rest of the test tools) come from make tools.
if [ ! -x "$bin/minio" ] && [[ "${BENCH_DRIVERS:-fs,s3,nodecache}" =~ s3|nodecache ]]; then
  log "MinIO missing: running scripts/tools.sh"
  "$root/scripts/tools.sh"
fi

# CNCF Distribution v3, built once into the cache, outside the checkout.
go_install registry-v3 github.com/distribution/distribution/v3/cmd/registry "$DIST3_VERSION"

# zot: try each module path once; say why it is not in the run.
zot_status=""
for m in "${ZOT_MODULES[@]}"; do
  if out=$(cd /tmp && GOTOOLCHAIN=local GOFLAGS=-mod=mod timeout 60 go list -m -versions "$m" 2>&1); then
    zot_status="the Go module proxy lists $m ($out), but bench/bench.py does not run zot yet"
    break
  fi
  why=$(printf '%s\n' "$out" | grep -m1 -o -E '[0-9]{3} [A-Z][A-Za-z ]+$' || printf '%s' "$out" | tail -n1)
  zot_status+="${zot_status:+; }$m: $why"
done
case "$zot_status" in
  *"bench.py does not run zot"*) ;;
  *) zot_status="not available: the Go module proxy answers every zot module path with an error ($zot_status)" ;;
esac
log "zot: $zot_status"

log "cargo build --release -p berth-registry"
(cd "$root" && cargo build --release -p berth-registry)

work=${BENCH_WORK:-$(mktemp -d /tmp/berth-bench.XXXXXX)}
mkdir -p "$work"
log "scratch directory: $work"

status=0
python3 "$root/bench/bench.py" \
  --work "$work" \
  --rounds "${BENCH_ROUNDS:-3}" \
  --duration "${BENCH_DURATION:-5}" \
  --drivers "${BENCH_DRIVERS:-fs,s3,nodecache}" \
  --berth "$root/target/release/berth-registry" \
  --dist28 /usr/bin/docker-registry \
  --dist3 "$bin/registry-v3" \
  --minio "$bin/minio" \
  --nginx /usr/sbin/nginx \
  --skopeo "$(command -v skopeo)" \
  --zot-status "$zot_status" \
  --command-line "make bench (BENCH_ROUNDS=${BENCH_ROUNDS:-3} BENCH_DURATION=${BENCH_DURATION:-5} BENCH_DRIVERS=${BENCH_DRIVERS:-fs,s3,nodecache})" \
  "$@" || status=$?

# Pull-through, side by side in a run of its own.
if [ "${BENCH_PULL_THROUGH:-1}" = 1 ] && [[ " $* " != *" --profile"* ]]; then
  python3 "$root/bench/pull_through.py" \
    --work "$work/pull-through" \
    --rounds "${BENCH_ROUNDS:-3}" \
    --duration "${BENCH_DURATION:-5}" \
    --berth "$root/target/release/berth-registry" \
    --dist28 /usr/bin/docker-registry \
    --dist3 "$bin/registry-v3" \
    --skopeo "$(command -v skopeo)" \
    --command-line "make bench, pull-through part (BENCH_ROUNDS=${BENCH_ROUNDS:-3} BENCH_DURATION=${BENCH_DURATION:-5})" \
    || status=$?
fi

# Keep the logs (compressed), wrk outputs and commands; drop the bulky parts.
rm -rf "$work/images" "$work/storage" "$work/minio" "$work/pull-through/images" "$work/pull-through/storage"
gzip -qf "$work"/logs/*.log "$work"/nginx/*.log "$work"/pull-through/logs/*.log 2>/dev/null || true
log "logs, wrk outputs and commands.log kept in $work"
exit "$status"
