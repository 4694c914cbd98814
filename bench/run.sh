#!/usr/bin/env bash
# `make bench`: Berth side by side with CNCF Distribution 2.8 and v3 and zot
# (and the machine's ceilings), on loopback, on this machine. See bench/README.md.
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
#   BENCH_PEERS      directory holding the peers' source snapshots (default
#                    /work/shared/peers): zot is built from zot-src-$ZOT_REV.tgz
#   BERTH_CACHE      tool cache (default ~/.cache/berth), as for make tools
#   CARGO_TARGET_DIR where cargo puts berth-registry (default target/)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

# Pinned versions (Distribution v3's, DIST3_VERSION, is in scripts/lib.sh).
# zot: the Go module proxy does not serve its module, so it is built from a
# source snapshot of this upstream commit (project-zot/zot).
ZOT_REV=6d19b445
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

# zot, built once into the cache from its source snapshot (zot's "minimal"
# build: no extensions), outside the checkout. Without the snapshot the run
# goes on without zot and says why.
peers=${BENCH_PEERS:-/work/shared/peers}
zot_src="$peers/zot-src-$ZOT_REV.tgz"
zot_dir="$cache/tools/zot-$ZOT_REV"
zot=""
zot_version="project-zot/zot commit $ZOT_REV (source snapshot zot-src-$ZOT_REV.tgz), the minimal build, cached in $zot_dir"
zot_missing=""
if [ ! -x "$zot_dir/zot" ] && [ -f "$zot_src" ]; then
  log "building zot $ZOT_REV from $zot_src (about 15 minutes the first time)"
  rm -rf "$zot_dir.tmp" && mkdir -p "$zot_dir.tmp/src"
  tar -xzf "$zot_src" -C "$zot_dir.tmp/src"
  (cd "$zot_dir.tmp/src" &&
    GOTOOLCHAIN=local CGO_ENABLED=0 GOEXPERIMENT=jsonv2 GOFLAGS=-mod=mod go build -trimpath -o ../zot ./cmd/zot)
  rm -rf "$zot_dir.tmp/src" "$zot_dir" && mv "$zot_dir.tmp" "$zot_dir"
fi
if [ -x "$zot_dir/zot" ]; then
  ln -sf "$zot_dir/zot" "$bin/zot"
  zot="$bin/zot"
else
  zot_missing="its source snapshot $zot_src is missing. Put zot-src-$ZOT_REV.tgz (project-zot/zot at commit $ZOT_REV, a tar.gz of the source tree) in that directory, or point BENCH_PEERS at the directory that holds it, and run make bench again"
  log "zot is not in this run: $zot_missing"
fi

target=${CARGO_TARGET_DIR:-$root/target}
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
  --berth "$target/release/berth-registry" \
  --dist28 /usr/bin/docker-registry \
  --dist3 "$bin/registry-v3" \
  --minio "$bin/minio" \
  --nginx /usr/sbin/nginx \
  --skopeo "$(command -v skopeo)" \
  --zot "$zot" \
  --zot-version "$zot_version" \
  --zot-missing "$zot_missing" \
  --command-line "make bench (BENCH_ROUNDS=${BENCH_ROUNDS:-3} BENCH_DURATION=${BENCH_DURATION:-5} BENCH_DRIVERS=${BENCH_DRIVERS:-fs,s3,nodecache})" \
  "$@" || status=$?

# Pull-through, side by side in a run of its own.
if [ "${BENCH_PULL_THROUGH:-1}" = 1 ] && [[ " $* " != *" --profile"* ]]; then
  python3 "$root/bench/pull_through.py" \
    --work "$work/pull-through" \
    --rounds "${BENCH_ROUNDS:-3}" \
    --duration "${BENCH_DURATION:-5}" \
    --berth "$target/release/berth-registry" \
    --dist28 /usr/bin/docker-registry \
    --dist3 "$bin/registry-v3" \
    --skopeo "$(command -v skopeo)" \
    --nginx /usr/sbin/nginx \
    --command-line "make bench, pull-through part (BENCH_ROUNDS=${BENCH_ROUNDS:-3} BENCH_DURATION=${BENCH_DURATION:-5})" \
    || status=$?
fi

# Keep the logs (compressed), wrk outputs and commands; drop the bulky parts.
rm -rf "$work/images" "$work/storage" "$work/minio" "$work/pull-through/images" "$work/pull-through/storage"
gzip -qf "$work"/logs/*.log "$work"/nginx/*.log "$work"/pull-through/logs/*.log 2>/dev/null || true
log "logs, wrk outputs and commands.log kept in $work"
exit "$status"
