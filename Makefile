# The two commands of the README, and a few more. Each one installs what the
# machine lacks first (scripts/env.sh).
SHELL := /bin/bash
ENV := set -eo pipefail; source scripts/env.sh;

.PHONY: cluster test bench check jepsen

## Start a local 3-node cluster on 127.0.0.1 (data in ./data/dev).
cluster:
	@$(ENV) cargo run -p ballast-store --bin ballastd -- dev

## Run the whole test suite.
test:
	@$(ENV) cargo test --workspace

## Load-test a running cluster (start one with `make cluster` first).
bench:
	@$(ENV) cargo run --release -p ballast-bench -- $(ARGS)

## Formatting and lints.
check:
	@$(ENV) cargo fmt --all -- --check && cargo clippy --workspace --all-targets -- -D warnings

## Fault-injection run of a real 3-node cluster (jepsen-lite). Defaults to the
## short CI run: register workload, kill + partition + pause, 60 s. More flags
## go in ARGS, e.g. make jepsen ARGS="--time 300 --nemesis kill,partition,pause,delay".
JEPSEN_ARGS ?= --time 60 --nemesis kill,partition,pause
jepsen:
	@$(ENV) cargo build -p ballast-store --bin ballastd && cargo build -p jepsen-lite \
	  && "$${CARGO_TARGET_DIR:-target}/debug/jepsen-lite" run $(JEPSEN_ARGS) $(ARGS)
