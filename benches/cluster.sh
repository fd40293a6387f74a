# Sourced by benches/run.sh and benches/smoke.sh: free loopback ports, and
# starting and stopping the clusters they measure. Every wait is bounded.
#
# The variables set for the sourcing script (BALLAST_PID, ETCD_ENDPOINTS, ...)
# look unused to shellcheck.
# shellcheck shell=bash disable=SC2034

# Whether something accepts connections on 127.0.0.1:PORT.
bench_port_open() {
  timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Prints a base port such that base+OFFSET is free on 127.0.0.1 for every
# OFFSET given (offsets up to 300). Ports are drawn below the kernel's range
# of ephemeral ports, which outgoing connections take without listening.
bench_pick_base() {
  local low attempt base offset busy
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  if [ "$low" -lt 12000 ]; then
    low=65000
  fi
  for attempt in $(seq 1 50); do
    base=$((10000 + (RANDOM * 32768 + RANDOM) % (low - 10000 - 300)))
    busy=0
    for offset in "$@"; do
      if bench_port_open $((base + offset)); then
        busy=1
        break
      fi
    done
    if [ "$busy" -eq 0 ]; then
      echo "$base"
      return 0
    fi
  done
  echo "no free loopback ports found after 50 attempts" >&2
  return 1
}

# Waits up to 60 s until every PORT accepts connections. Fails at once when
# one of PIDS (a space-separated list) has exited, e.g. because a port was
# taken after it was picked.
bench_wait_listening() {
  local pids="$1" i pid port up
  shift
  for i in $(seq 1 300); do
    for pid in $pids; do
      kill -0 "$pid" 2>/dev/null || return 1
    done
    up=1
    for port in "$@"; do
      if ! bench_port_open "$port"; then
        up=0
        break
      fi
    done
    if [ "$up" -eq 1 ]; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

# Stops one process this shell started: SIGTERM, up to 20 s to exit, then
# SIGKILL. Returns once it is gone.
bench_stop_pid() {
  local pid="$1" name="${2:-process}" i
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$name (pid $pid) did not stop within 20 s of SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

# For a script that starts clusters and load generators: makes the
# temporary directory `tmp` (under TMPDIR, named after PREFIX), empties the
# PID variables of what the script starts (BENCH_PID, BALLAST_PID,
# ETCD_PIDS), and on any exit (an error, Ctrl-C, SIGTERM) stops those
# processes by PID and removes the directory.
bench_with_cleanup() {
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
  BENCH_PID=""
  BALLAST_PID=""
  ETCD_PIDS=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# The exit trap of bench_with_cleanup.
bench_cleanup() {
  local rc=$? pid
  for pid in $BENCH_PID $BALLAST_PID "${ETCD_PIDS[@]}"; do
    bench_stop_pid "$pid"
  done
  rm -rf "$tmp"
  exit "$rc"
}

# Ports of `ballastd dev --base-port BASE`: client BASE, BASE+100, BASE+200;
# peer one above each.
BENCH_BALLAST_PORTS=(0 1 100 101 200 201)

# Starts `BIN/ballastd dev` in DIR on free ports, logging to LOG, and waits
# until its client ports listen; tries up to three port sets. Sets BALLAST_PID
# (as soon as the process exists, so that a trap can stop it; empty again
# once it is stopped) and BALLAST_ENDPOINTS.
bench_start_ballast() {
  local bin="$1" dir="$2" log="$3" attempt base
  for attempt in 1 2 3; do
    base="$(bench_pick_base "${BENCH_BALLAST_PORTS[@]}")" || return 1
    rm -rf "$dir"
    "$bin/ballastd" dev --dir "$dir" --base-port "$base" >"$log" 2>&1 &
    BALLAST_PID=$!
    BALLAST_ENDPOINTS="http://127.0.0.1:$base,http://127.0.0.1:$((base + 100)),http://127.0.0.1:$((base + 200))"
    if bench_wait_listening "$BALLAST_PID" "$base" $((base + 100)) $((base + 200)); then
      return 0
    fi
    echo "ballastd dev on base port $base did not come up (attempt $attempt); its log ends:" >&2
    tail -n 5 "$log" >&2
    bench_stop_pid "$BALLAST_PID" ballastd
    BALLAST_PID=""
  done
  return 1
}

# Ports of the etcd cluster: member i has client port BASE+10*(i-1) and peer
# port one above.
BENCH_ETCD_PORTS=(0 1 10 11 20 21)

# Starts a new 3-member etcd cluster on free loopback ports, data under DIR
# (one folder per member), logs in LOGDIR, etcd's defaults otherwise (fsync
# on), and waits until its client ports listen; tries up to three port sets.
# Sets ETCD_PIDS (like BALLAST_PID) and ETCD_ENDPOINTS.
bench_start_etcd() {
  local dir="$1" logdir="$2" attempt base pid
  for attempt in 1 2 3; do
    base="$(bench_pick_base "${BENCH_ETCD_PORTS[@]}")" || return 1
    rm -rf "$dir"
    mkdir -p "$dir"
    bench_spawn_etcd "$dir" "$base" "$logdir"
    if bench_wait_listening "${ETCD_PIDS[*]}" "$base" $((base + 10)) $((base + 20)); then
      return 0
    fi
    echo "etcd on base port $base did not come up (attempt $attempt); member 1's log ends:" >&2
    tail -n 5 "$logdir/etcd-m1.log" >&2
    for pid in "${ETCD_PIDS[@]}"; do
      bench_stop_pid "$pid" etcd
    done
    ETCD_PIDS=()
  done
  return 1
}

# Spawns the three members on BASE (see BENCH_ETCD_PORTS) without waiting.
bench_spawn_etcd() {
  local dir="$1" base="$2" logdir="$3" cluster="" i client peer
  for i in 1 2 3; do
    cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 10 * (i - 1) + 1))"
  done
  ETCD_PIDS=()
  ETCD_ENDPOINTS=""
  for i in 1 2 3; do
    client=$((base + 10 * (i - 1)))
    peer=$((client + 1))
    etcd --name "m$i" --data-dir "$dir/m$i" \
      --listen-client-urls "http://127.0.0.1:$client" \
      --advertise-client-urls "http://127.0.0.1:$client" \
      --listen-peer-urls "http://127.0.0.1:$peer" \
      --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "$cluster" \
      --initial-cluster-token "ballast-bench-$base" \
      --initial-cluster-state new \
      --logger zap --log-outputs stderr \
      >"$logdir/etcd-m$i.log" 2>&1 &
    ETCD_PIDS+=("$!")
    ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}http://127.0.0.1:$client"
  done
}
