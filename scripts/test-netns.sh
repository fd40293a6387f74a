#!/usr/bin/env bash
# Runs the multi-host test (tests/tests/netns: three ballastd nodes and a
# data-plane replica, each in its own network namespace, addressing each other
# by host name) when this machine allows it: as root, with iproute2 and a
# kernel that creates network namespaces and veth links. Elsewhere it says
# why it skips the test and succeeds. A failing test fails the script.
set -uo pipefail
cd "$(dirname "$0")/.."

skip() {
  echo "SKIPPED netns test (a cluster on separate hosts, simulated): $*" >&2
  exit 0
}

[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
command -v ip >/dev/null 2>&1 || skip "no ip command (install iproute2)"
probe="ballast-probe-$$"
if ! ip netns add "$probe" 2>/dev/null; then
  skip "this kernel or container does not allow 'ip netns add'"
fi
veth_ok=0
ip -n "$probe" link add p0 type veth peer name p1 2>/dev/null && veth_ok=1
ip netns del "$probe" 2>/dev/null
[ "$veth_ok" -eq 1 ] || skip "this kernel or container does not allow veth links"

set -e
# The binaries the test runs, built the way the other process tests build
# them (so the builds share their artefacts), then handed to the test.
cargo build -p ballast-store --bin ballastd
cargo build -p ballast-client --bin ballastctl
target="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
export BALLAST_NETNS_BALLASTD="$target/debug/ballastd"
export BALLAST_NETNS_BALLASTCTL="$target/debug/ballastctl"
exec cargo test -p ballast-tests --test netns -- --ignored --test-threads 1 "$@"
