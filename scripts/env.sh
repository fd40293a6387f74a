# Sourced by the Makefile (and by hand: `source scripts/env.sh`) before cargo.
#
# Installs what a fresh Debian machine lacks to build ballast, and points the
# rocksdb crate at the system RocksDB so it is linked instead of compiled.
# protobuf-compiler (protoc) is for ballast-bench's etcd client, whose build
# script compiles etcd's gRPC definitions.
#   BALLAST_ROCKSDB=system   (default) link Debian's librocksdb-dev (seconds)
#   BALLAST_ROCKSDB=bundled  compile the crate's bundled RocksDB C++ (many minutes)

ballast_need_pkgs() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "ballast: please install: ${missing[*]}" >&2
    return 1
  fi
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "ballast: installing ${missing[*]}" >&2
  $sudo apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}

ballast_setup() {
  local mode="${BALLAST_ROCKSDB:-system}"
  case "$mode" in
    system)
      ballast_need_pkgs librocksdb-dev libclang-dev protobuf-compiler || return 1
      local lib
      lib=$(dpkg -L librocksdb-dev 2>/dev/null | grep '/librocksdb\.so$' | head -n1)
      if [ -z "$lib" ]; then
        echo "ballast: librocksdb-dev is installed but librocksdb.so was not found" >&2
        return 1
      fi
      export ROCKSDB_LIB_DIR="$(dirname "$lib")"
      ;;
    bundled)
      ballast_need_pkgs libclang-dev g++ protobuf-compiler || return 1
      unset ROCKSDB_LIB_DIR
      ;;
    *)
      echo "ballast: BALLAST_ROCKSDB must be 'system' or 'bundled', not '$mode'" >&2
      return 1
      ;;
  esac
  command -v cargo >/dev/null 2>&1 || { echo "ballast: cargo (Rust toolchain) is required" >&2; return 1; }
}

ballast_setup
