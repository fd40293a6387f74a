#!/usr/bin/env bash
# Builds the release binaries (ballastd, ballastctl) against a current RocksDB
# compiled from source in release mode, as release artefacts and the container
# image ship them.
#
# Development builds link Debian's librocksdb (7.8, built with assertions on)
# through the `rocksdb` crate pinned in Cargo.toml to the version that matches
# it. A release build instead uses the newer `rocksdb` crate named in
# Cargo.toml under [workspace.metadata.release], which compiles the RocksDB it
# bundles. Cargo allows one crate linking `rocksdb` per dependency graph, so
# the two cannot sit side by side in one workspace: this script copies the
# workspace into the target directory, swaps the pin there, and builds the
# copy. Cargo.lock is copied too, and cargo changes in the copy only what the
# new pin needs (the RocksDB crates and their build tools); the script prints
# those changes.
#
# Output: ${CARGO_TARGET_DIR:-target}/bundled/release/{ballastd,ballastctl}.
# Compiling RocksDB takes twenty minutes or more on 2 cores, once; later runs
# reuse it. Extra arguments go to `cargo build` (e.g. -p ballast-bench).
#
#   scripts/release.sh --prepare-only   make the copy with the release pin and
#                                       print its path; build nothing
#   scripts/release.sh --print-pin      print the release pin; build nothing
set -euo pipefail

prepare_only=0
print_pin=0
case "${1:-}" in
  --prepare-only) prepare_only=1; shift ;;
  --print-pin) print_pin=1; shift ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [ "$prepare_only" -eq 0 ] && [ "$print_pin" -eq 0 ]; then
  export BALLAST_ROCKSDB=bundled
  # shellcheck source=scripts/env.sh
  source scripts/env.sh
fi

target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
out="$target/bundled"
src="$out/workspace"

# The release pin, read from Cargo.toml's [workspace.metadata.release].
release_pin=$(sed -n '/^\[workspace\.metadata\.release\]/,/^\[/{s/^rocksdb = \(.*\)$/\1/p}' Cargo.toml)
if [ -z "$release_pin" ]; then
  echo "release: Cargo.toml has no rocksdb entry under [workspace.metadata.release]" >&2
  exit 1
fi
if [ "$print_pin" -eq 1 ]; then
  echo "$release_pin"
  exit 0
fi
dev_line='^rocksdb = { version = "=[0-9.]*", default-features = false }$'
if [ "$(grep -c "$dev_line" Cargo.toml)" -ne 1 ]; then
  echo "release: expected exactly one development rocksdb pin in Cargo.toml matching: $dev_line" >&2
  exit 1
fi

# A fresh copy of the workspace sources: the manifests, the lock file and the
# members (whatever `git` tracks when this is a checkout, else the members'
# directories as they are).
rm -rf "$src"
mkdir -p "$src"
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$root" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
    xargs -0 cp --parents -t "$src"
else
  members=$(sed -n 's/^members = \[\(.*\)\]$/\1/p' Cargo.toml | tr -d '"' | tr ',' ' ')
  # shellcheck disable=SC2086
  cp -r Cargo.toml Cargo.lock $members "$src"/
fi
for f in Cargo.toml Cargo.lock; do
  [ -f "$src/$f" ] || { echo "release: $f missing from the copy" >&2; exit 1; }
done
sed -i "s|$dev_line|rocksdb = $release_pin|" "$src/Cargo.toml"
grep -qxF "rocksdb = $release_pin" "$src/Cargo.toml" || {
  echo "release: could not set the release rocksdb pin in the copy" >&2
  exit 1
}

if [ "$prepare_only" -eq 1 ]; then
  echo "$src"
  exit 0
fi

cd "$src"
# Re-lock only what the pin changes (cargo lists each change).
version=$(echo "$release_pin" | sed -n 's/.*version = "=\([0-9.]*\)".*/\1/p')
cargo update -p rocksdb --precise "$version"

cargo build --release --locked --target-dir "$out" \
  -p ballast-store --bin ballastd -p ballast-client --bin ballastctl "$@"
echo "built $out/release/ballastd and $out/release/ballastctl (RocksDB from $release_pin)"
