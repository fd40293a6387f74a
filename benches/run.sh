#!/usr/bin/env bash
# Side-by-side benchmark of ballast and etcd on this machine.
#
# Builds release binaries, then one system at a time: starts a 3-node ballast
# (`ballastd dev`) in a temporary directory, runs the workload matrix with
# ballast-bench, stops it; starts a 3-member etcd cluster (loopback, fsync on,
# its own temporary data), runs the same matrix, stops it. Then
# `ballast-bench report` writes summary.md and the charts. Only loopback
# addresses; processes are stopped by PID and temporary data removed even on
# failure or Ctrl-C.
#
# Settings (environment):
#   DURATION=8s                 time per row
#   CLIENTS=1,16,64,256         client counts
#   WORKLOADS=put,get-linearizable,get-serializable,txn-cas,mixed
#   GRPC_CONNECTIONS=16         gRPC connections the etcd clients share
#   OUT=benches/results/<UTC date>   where results go
#   EXTRA_ARGS=                 more ballast-bench flags, for both systems
#   BALLASTD_BUILD=dev          which ballastd: `dev` (cargo build --release,
#                               linking Debian's RocksDB like every development
#                               build) or `release` (scripts/release.sh, the
#                               release artefact with a current RocksDB built
#                               from source; slow the first time)
#
# A short trial: DURATION=2s CLIENTS=1,16 benches/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-8s}"
CLIENTS="${CLIENTS:-1,16,64,256}"
WORKLOADS="${WORKLOADS:-put,get-linearizable,get-serializable,txn-cas,mixed}"
GRPC_CONNECTIONS="${GRPC_CONNECTIONS:-16}"
OUT="${OUT:-benches/results/$(date -u +%Y-%m-%d)}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
BALLASTD_BUILD="${BALLASTD_BUILD:-dev}"
case "$BALLASTD_BUILD" in
  dev | release) ;;
  *) echo "run.sh: BALLASTD_BUILD must be 'dev' or 'release', not '$BALLASTD_BUILD'" >&2; exit 2 ;;
esac
# How long a freshly started cluster may take to accept writes.
READY_TIMEOUT=60s

# Build dependencies (RocksDB, protoc), then the etcd server.
# shellcheck source=scripts/env.sh
source scripts/env.sh
ballast_need_pkgs etcd-server
command -v etcd >/dev/null || { echo "run.sh: etcd is not on PATH after installing etcd-server" >&2; exit 1; }
# shellcheck source=benches/cluster.sh
source benches/cluster.sh

# The source the binaries are built from, read before anything is written:
# results already committed under $OUT are not local changes to the code.
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- . ":(exclude)$OUT" 2>/dev/null || commit="$commit (with local changes)"

echo "== building release binaries" >&2
cargo build --release -p ballast-store -p ballast-bench --bin ballastd --bin ballast-bench
BIN="${CARGO_TARGET_DIR:-target}/release"
# Where the measured ballastd is, and which RocksDB it carries.
SERVER_BIN="$BIN"
rocksdb_used="Debian librocksdb $(dpkg-query -W -f='${Version}' librocksdb-dev 2>/dev/null || echo unknown), linked"
if [ "$BALLASTD_BUILD" = release ]; then
  echo "== building the release ballastd (scripts/release.sh)" >&2
  scripts/release.sh
  SERVER_BIN="${CARGO_TARGET_DIR:-target}/bundled/release"
  rocksdb_used="compiled from source: $(scripts/release.sh --print-pin)"
fi

bench_with_cleanup ballast-bench

# Runs ballast-bench in the background and waits for it, so that a signal to
# this script is acted on at once (the cleanup then stops the run too).
run_bench() {
  local rc=0
  "$BIN/ballast-bench" "$@" &
  BENCH_PID=$!
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  return "$rc"
}

mkdir -p "$OUT"
# shellcheck disable=SC2206
extra=($EXTRA_ARGS)
bench_args=(--workloads "$WORKLOADS" --clients "$CLIENTS" --duration "$DURATION"
  --grpc-connections "$GRPC_CONNECTIONS" --wait-ready "$READY_TIMEOUT" --out "$OUT"
  "${extra[@]}")

{
  echo "date (UTC): $(date -u +'%Y-%m-%d %H:%M')"
  echo "ballast commit: $commit"
  echo "machine: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "etcd: $(etcd --version 2>/dev/null | head -n1)"
  echo "ballastd build: $BALLASTD_BUILD (RocksDB $rocksdb_used)"
  echo "settings: DURATION=$DURATION CLIENTS=$CLIENTS WORKLOADS=$WORKLOADS GRPC_CONNECTIONS=$GRPC_CONNECTIONS EXTRA_ARGS=$EXTRA_ARGS"
} >"$OUT/run.txt"

# ---- ballast
echo "== ballast: 3-node ballastd dev on 127.0.0.1" >&2
bench_start_ballast "$SERVER_BIN" "$tmp/ballast" "$tmp/ballastd.log"
echo "   client endpoints $BALLAST_ENDPOINTS" >&2
status=0
run_bench --target ballast --endpoints "$BALLAST_ENDPOINTS" "${bench_args[@]}" || status=$?
if [ "$status" -ne 0 ]; then
  echo "run.sh: the ballast run failed ($status); the end of ballastd's log:" >&2
  tail -n 30 "$tmp/ballastd.log" >&2
  exit "$status"
fi
bench_stop_pid "$BALLAST_PID" ballastd
BALLAST_PID=""
rm -rf "$tmp/ballast"

# ---- etcd
echo "== etcd: 3 members on 127.0.0.1" >&2
bench_start_etcd "$tmp/etcd" "$tmp"
echo "   client endpoints $ETCD_ENDPOINTS" >&2
run_bench --target etcd --endpoints "$ETCD_ENDPOINTS" "${bench_args[@]}" || status=$?
if [ "$status" -ne 0 ]; then
  echo "run.sh: the etcd run failed ($status); the end of each member's log:" >&2
  for log in "$tmp"/etcd-m*.log; do
    echo "-- $(basename "$log")" >&2
    tail -n 15 "$log" >&2
  done
  exit "$status"
fi
for pid in "${ETCD_PIDS[@]}"; do
  bench_stop_pid "$pid" etcd
done
ETCD_PIDS=()
rm -rf "$tmp/etcd"

# ---- side by side
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/run.txt"
"$BIN/ballast-bench" report "$OUT"
echo "== results in $OUT (summary.md)" >&2
