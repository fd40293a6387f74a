# Sourced by benches/run.sh and benches/smoke.sh: free loopback ports, and
# starting and stopping the clusters they measure. Every wait is bounded.

# Prints a base port such that base+OFFSET is free on 127.0.0.1 for every
# OFFSET given. A port counts as free when nothing accepts a connection on it.
bench_pick_base() {
  local attempt base offset busy
  for attempt in $(seq 1 50); do
    base=$((20000 + (RANDOM * 32768 + RANDOM) % 20000))
    busy=0
    for offset in "$@"; do
      if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$((base + offset))" 2>/dev/null; then
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

# Ports of `ballastd dev --base-port BASE`: client BASE, BASE+100, BASE+200;
# peer one above each.
BENCH_BALLAST_PORTS=(0 1 100 101 200 201)

# Starts `BIN/ballastd dev` in DIR on BASE, logging to LOG. Sets BALLAST_PID
# and BALLAST_ENDPOINTS.
bench_start_ballast() {
  local bin="$1" dir="$2" base="$3" log="$4"
  "$bin/ballastd" dev --dir "$dir" --base-port "$base" >"$log" 2>&1 &
  BALLAST_PID=$!
  BALLAST_ENDPOINTS="http://127.0.0.1:$base,http://127.0.0.1:$((base + 100)),http://127.0.0.1:$((base + 200))"
}

# Ports of the etcd cluster: member i has client port BASE+10*(i-1) and peer
# port one above.
BENCH_ETCD_PORTS=(0 1 10 11 20 21)

# Starts a new 3-member etcd cluster on loopback, data under DIR (one folder
# per member), logs in LOGDIR. etcd's defaults otherwise (fsync on). Sets
# ETCD_PIDS and ETCD_ENDPOINTS.
bench_start_etcd() {
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
