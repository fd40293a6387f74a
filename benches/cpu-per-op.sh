#!/usr/bin/env bash
# CPU time per operation of each system and of the load generator, ballast
# and etcd measured the same way, one system after the other.
#
# For each system: starts a 3-node cluster (as benches/run.sh does), then for
# each client count runs one ballast-bench row and reads the CPU time
# (utime + stime, /proc/<pid>/stat) of the servers and of ballast-bench over a
# window in the middle of the row, after the preload; prints the operations
# per second, the server's and the load generator's CPU per operation, and
# the cores each used. Only loopback addresses; processes are stopped by PID
# and temporary data removed even on failure or Ctrl-C.
#
# Settings (environment):
#   WORKLOAD=put        one ballast-bench workload
#   CLIENTS="256 16"    client counts (space-separated)
#   WINDOW=4            seconds measured, starting 4 s into a row of WINDOW + 5 s
#   TARGETS="etcd ballast"
#
# Example: CLIENTS=256 benches/cpu-per-op.sh
set -euo pipefail
cd "$(dirname "$0")/.."

WORKLOAD="${WORKLOAD:-put}"
CLIENTS="${CLIENTS:-256 16}"
WINDOW="${WINDOW:-4}"
TARGETS="${TARGETS:-etcd ballast}"
case "$WINDOW" in
  '' | *[!0-9]* | 0) echo "cpu-per-op.sh: WINDOW must be a whole number of seconds above 0" >&2; exit 2 ;;
esac

# shellcheck source=scripts/env.sh
source scripts/env.sh
case " $TARGETS " in
  *" etcd "*)
    ballast_need_pkgs etcd-server
    command -v etcd >/dev/null || { echo "cpu-per-op.sh: etcd is not on PATH after installing etcd-server" >&2; exit 1; }
    ;;
esac
# shellcheck source=benches/cluster.sh
source benches/cluster.sh

cargo build --release -p ballast-store -p ballast-bench --bin ballastd --bin ballast-bench >&2
BIN="${CARGO_TARGET_DIR:-target}/release"
TICKS="$(getconf CLK_TCK)"

bench_with_cleanup ballast-cpu

# CPU ticks (utime + stime) of the given PIDs together.
ticks() {
  local sum=0 pid t
  for pid in "$@"; do
    # Fields 14 and 15, counted after the command name's closing parenthesis.
    t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
    sum=$((sum + t))
  done
  echo "$sum"
}

# One row: TARGET ENDPOINTS CLIENTS SERVER_PIDS...
measure() {
  local target="$1" endpoints="$2" clients="$3" out="$tmp/row.txt"
  shift 3
  "$BIN/ballast-bench" --target "$target" --endpoints "$endpoints" --workloads "$WORKLOAD" \
    --clients "$clients" --duration "$((WINDOW + 5))s" --wait-ready 60s >"$out" 2>&1 &
  BENCH_PID=$!
  sleep 4
  local s0 b0 s1 b1
  s0=$(ticks "$@")
  b0=$(ticks "$BENCH_PID")
  sleep "$WINDOW"
  s1=$(ticks "$@")
  b1=$(ticks "$BENCH_PID")
  wait "$BENCH_PID" || { cat "$out" >&2; return 1; }
  BENCH_PID=""
  local rate
  rate=$(grep -E "^\| $WORKLOAD \|" "$out" | awk -F'|' '{gsub(/[ ,]/, "", $4); print $4}')
  [ -n "$rate" ] && [ "$rate" -gt 0 ] || { echo "no rate in:" >&2; cat "$out" >&2; return 1; }
  awk -v t="$target" -v c="$clients" -v r="$rate" -v s=$((s1 - s0)) -v b=$((b1 - b0)) \
    -v hz="$TICKS" -v w="$WINDOW" 'BEGIN {
      ops = r * w
      printf "| %s | %d | %d | %.0f µs | %.0f µs | %.2f | %.2f |\n",
        t, c, r, s / hz * 1e6 / ops, b / hz * 1e6 / ops, s / hz / w, b / hz / w
    }'
}

echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) CPUs, workload $WORKLOAD, ${WINDOW} s measured per row"
echo
echo "| system | clients | ops/s | server CPU per op | load generator CPU per op | server cores | load generator cores |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for target in $TARGETS; do
  case "$target" in
    etcd)
      bench_start_etcd "$tmp/etcd" "$tmp"
      sleep 2
      for c in $CLIENTS; do measure etcd "$ETCD_ENDPOINTS" "$c" "${ETCD_PIDS[@]}"; done
      for pid in "${ETCD_PIDS[@]}"; do bench_stop_pid "$pid" etcd; done
      ETCD_PIDS=()
      ;;
    ballast)
      bench_start_ballast "$BIN" "$tmp/ballast" "$tmp/ballast.log"
      sleep 2
      for c in $CLIENTS; do measure ballast "$BALLAST_ENDPOINTS" "$c" "$BALLAST_PID"; done
      bench_stop_pid "$BALLAST_PID" ballastd
      BALLAST_PID=""
      ;;
    *) echo "cpu-per-op.sh: unknown target '$target' (etcd or ballast)" >&2; exit 2 ;;
  esac
done
