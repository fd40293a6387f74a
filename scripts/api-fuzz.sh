#!/usr/bin/env bash
# API fuzzing (CI): schemathesis, from PyPI, generates requests from the
# node's own OpenAPI document (GET /openapi.json) and sends them to a debug
# `ballastd dev` on free loopback ports. Fails on any 5xx, a dropped
# connection, or an answer the document does not describe (status, content
# type, headers, body schema). Bounded: a fixed number of examples per
# operation, a time budget, and an outer timeout. The node is stopped by PID
# and its temporary directory removed, also on failure.
#
# Not fuzzed: GET /v1/watch/{key} (and the empty-key /v1/watch routes): a
# watch is a Server-Sent Events stream that does not end, so every generated
# request would only wait for the request timeout; its refusals (bad query,
# bad key, bad Last-Event-ID) are covered by the router tests.
# POST /v1/leader/transfer and DELETE /v1/members/{id} run last, each alone:
# a transfer leaves the cluster without a leader for a moment (writes sent
# meanwhile answer a documented, retryable 503 no_leader), and removing a
# voter from the 3-node cluster is allowed and leaves the node that answered
# it removed (410 on every later request), which would blind the rest of the
# run.
#
# Environment: API_FUZZ_EXAMPLES (examples per operation, default 40),
# API_FUZZ_SECONDS (time budget of the main pass, default 60; the two
# passes after it take 20 s each),
# API_FUZZ_SEED (default fixed, so a CI failure reproduces), BALLASTD_BIN (a
# prebuilt ballastd instead of the debug build).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=benches/cluster.sh
source benches/cluster.sh

SCHEMATHESIS_VERSION=4.32.5
EXAMPLES="${API_FUZZ_EXAMPLES:-40}"
SECONDS_BUDGET="${API_FUZZ_SECONDS:-60}"
SEED="${API_FUZZ_SEED:-20261130}"
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance

# schemathesis in its own virtualenv under the cache directory, installed once
# per version.
VENV="$HOME/.cache/ballast/api-fuzz/venv-schemathesis-$SCHEMATHESIS_VERSION"
if [ ! -x "$VENV/bin/st" ]; then
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    echo "api-fuzz.sh: installing python3-venv (apt)" >&2
    apt-get install -y -q python3-venv >/dev/null
  fi
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --disable-pip-version-check -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

if [ -n "${BALLASTD_BIN:-}" ]; then
  BIN="$(dirname "$BALLASTD_BIN")"
else
  # The debug ballastd exactly as `make test` builds it (see benches/smoke.sh).
  cargo test --workspace --no-run --quiet
  BIN="${CARGO_TARGET_DIR:-target}/debug"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/ballast-api-fuzz.XXXXXX")"
BALLAST_PID=""
cleanup() {
  local rc=$?
  if [ -n "$BALLAST_PID" ]; then
    bench_stop_pid "$BALLAST_PID" ballastd
  fi
  if [ "$rc" -ne 0 ] && [ -f "$tmp/ballastd.log" ]; then
    echo "api-fuzz.sh: the end of ballastd's log:" >&2
    tail -n 30 "$tmp/ballastd.log" >&2
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench_start_ballast "$BIN" "$tmp/dev" "$tmp/ballastd.log"
URL="${BALLAST_ENDPOINTS%%,*}"
ready=0
for _ in $(seq 1 300); do
  if curl -fsS -o /dev/null --max-time 2 "$URL/health/ready"; then
    ready=1
    break
  fi
  sleep 0.2
done
if [ "$ready" -ne 1 ]; then
  echo "api-fuzz.sh: $URL never became ready" >&2
  exit 1
fi

st() {
  # The outer timeout only guards against a hang; --max-time bounds the run.
  # Run from the temporary directory: schemathesis keeps its cache
  # (.schemathesis/) in the working directory.
  (cd "$tmp" && timeout 600 "$VENV/bin/st" run "$URL/openapi.json" \
    --checks "$CHECKS" --max-examples "$EXAMPLES" --seed "$SEED" \
    --request-timeout 15 --no-color "$@")
}

echo "== api-fuzz: every operation but the watch stream and the leadership and membership changes"
st --phases examples,coverage,fuzzing --max-time "$SECONDS_BUDGET" --workers 2 \
  --exclude-path-regex '^/v1/watch' \
  --exclude-operation-id transfer --exclude-operation-id remove 2>&1 \
  | tee "$tmp/main.txt" || { echo "api-fuzz.sh: the main pass failed" >&2; exit 1; }

# A leader transfer or a removal leaves the cluster without a leader for a
# moment, and the writes sent meanwhile a documented 503 no_leader: these
# run alone, one request at a time, after everything else.
for op in transfer remove; do
  echo "== api-fuzz: $op alone (it changes the leader or the members)"
  st --phases examples,coverage,fuzzing --max-time 20 --workers 1 \
    --include-operation-id "$op" 2>&1 \
    | tee "$tmp/$op.txt" || { echo "api-fuzz.sh: the $op pass failed" >&2; exit 1; }
done

echo "api-fuzz.sh: no server error, crash or answer outside the document"
