# The two commands of the README, and a few more. Each one installs what the
# machine lacks first (scripts/env.sh).
SHELL := /bin/bash
ENV := set -eo pipefail; source scripts/env.sh;

.PHONY: cluster test test-netns bench check jepsen release

## Start a local 3-node cluster on 127.0.0.1 (data in ./data/dev).
cluster:
	@$(ENV) cargo run -p ballast-store --bin ballastd -- dev

## Release binaries (ballastd, ballastctl) linking a current RocksDB (the
## crate named in Cargo.toml under [workspace.metadata.release]) compiled from
## source in release mode (no assertions, unlike Debian's librocksdb), as the
## container image does: scripts/release.sh builds a copy of the workspace
## with that pin, in ${CARGO_TARGET_DIR:-target}/bundled/, so development
## builds keep linking the system RocksDB. Compiling RocksDB takes twenty
## minutes or more on 2 cores, once; later runs reuse it.
release:
	@scripts/release.sh

## Run the whole test suite: every crate, then the tests that need failpoints
## compiled in (their own test binary), then the multi-host test when the
## machine allows it (see test-netns).
test:
	@$(ENV) cargo test --workspace \
	  && cargo test -p ballast-tests --features failpoints --test failpoints \
	  && scripts/test-netns.sh

## A cluster on separate hosts, simulated: three nodes and a replica in four
## network namespaces (tests/tests/netns). Runs as root where `ip netns add`
## works; prints why it skips otherwise.
test-netns:
	@$(ENV) scripts/test-netns.sh

## Load-test a running cluster (start one with `make cluster` first).
bench:
	@$(ENV) cargo run --release -p ballast-bench -- $(ARGS)

## Formatting and lints.
check:
	@$(ENV) cargo fmt --all -- --check && cargo clippy --workspace --all-targets -- -D warnings

## Fault-injection run of a real 3-node cluster (jepsen-lite). Defaults to the
## short CI run: register workload with 64 KiB values, kill + partition + pause
## + lagging (a follower cut off until it must catch up by snapshot, with
## snapshots every 50 entries), 60 s. More flags go in ARGS (later ones win),
## e.g. make jepsen ARGS="--time 300 --nemesis kill,partition,pause,delay";
## JEPSEN_ARGS="..." replaces the defaults (e.g. to run with unpadded values).
JEPSEN_ARGS ?= --time 60 --nemesis kill,partition,pause,lagging --value-size 65536 \
  --node-arg=--snapshot-logs=50
jepsen:
	@$(ENV) cargo build -p ballast-store --bin ballastd && cargo build -p jepsen-lite \
	  && "$${CARGO_TARGET_DIR:-target}/debug/jepsen-lite" run $(JEPSEN_ARGS) $(ARGS)
