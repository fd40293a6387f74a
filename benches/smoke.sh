#!/usr/bin/env bash
# Smoke test of the load generator (CI): starts a debug `ballastd dev` on free
# loopback ports in a temporary directory, runs `ballast-bench --smoke` (every
# workload for a second at 1 and 4 clients; fails on any failed request or a
# row without throughput), over HTTP/1.1 and then over HTTP/2, then stops that
# process by PID and removes the directory, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=benches/cluster.sh
source benches/cluster.sh

# The debug ballastd and ballast-bench exactly as `make test` builds them (both
# packages have integration tests that run their binaries): after `make test`
# this only checks that they are up to date. A plain `cargo build` of the two
# would unify dependency features differently and rebuild much of the tree.
cargo test --workspace --no-run --quiet
BIN="${CARGO_TARGET_DIR:-target}/debug"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/ballast-smoke.XXXXXX")"
BALLAST_PID=""
cleanup() {
  local rc=$?
  if [ -n "$BALLAST_PID" ]; then
    bench_stop_pid "$BALLAST_PID" ballastd
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench_start_ballast "$BIN" "$tmp/dev" "$tmp/ballastd.log"

status=0
# The smoke's own rows take about 15 s; the outer limit only guards against a hang.
timeout 300 "$BIN/ballast-bench" --smoke --endpoints "$BALLAST_ENDPOINTS" \
  --wait-ready 60s --no-progress || status=$?
# The same over HTTP/2, clients sharing 3 connections, writing without
# client sessions (the first pass writes with them).
if [ "$status" -eq 0 ]; then
  timeout 300 "$BIN/ballast-bench" --smoke --endpoints "$BALLAST_ENDPOINTS" \
    --http2-connections 3 --no-sessions --no-progress || status=$?
fi
if [ "$status" -ne 0 ]; then
  echo "smoke.sh: ballast-bench --smoke failed ($status); the end of ballastd's log:" >&2
  tail -n 30 "$tmp/ballastd.log" >&2
  exit "$status"
fi
echo "smoke.sh: every workload ran without errors, over HTTP/1.1 and HTTP/2 (the latter without sessions)"
