#!/usr/bin/env bash
# h2_upstream.sh - what HTTP/2 to the upstream costs healgate, against HTTP/1.1 to the
# same backend, in one run.
#
# One nginx backend (1 worker) serves the same files from tmpfs on two ports:
#   H1:  listen P       (HTTP/1.1 keep-alive)
#   H2:  listen P http2 (h2c, prior knowledge: nginx 1.22 without ssl)
# One healgate (workers = 1, access_log = false) with two upstreams on that backend:
#   /h1/ → protocol = "h1"   (a pool of keep-alive connections)
#   /h2/ → protocol = "h2"   (one multiplexed h2c connection)
# wrk (HTTP/1.1, keep-alive, CONNS connections, 1 thread pinned to CLIENT_CPU) loads
# /h1/SIZE and /h2/SIZE in turn, rounds alternating. CPU per request is the healgate
# process's utime+stime delta (/proc/PID/stat) over the requests wrk completed; the
# backend's is shown too. Prints a markdown table of medians and RATIO lines (h2/h1).
#
# Usage: bench/h2_upstream.sh   (env: DURATION=10 CONNS=50 ROUNDS=3 SIZES="1k 64k"
#                                SERVER_CPU=0 CLIENT_CPU=1 HEALGATE=target/release/healgate
#                                PORT_BASE=19500)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-1k 64k}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
HEALGATE=${HEALGATE:-target/release/healgate}
PORT_BASE=${PORT_BASE:-19500}
B_H1=$((PORT_BASE + 1)) B_H2=$((PORT_BASE + 2))
GATEWAY=$((PORT_BASE + 4)) GATEWAY_ADMIN=$((PORT_BASE + 5))

for tool in nginx wrk taskset curl; do
  command -v $tool >/dev/null || { echo "h2_upstream.sh: needs $tool (apt-get install nginx wrk util-linux curl)" >&2; exit 1; }
done
[ -x "$HEALGATE" ] || { echo "h2_upstream.sh: build first: cargo build --release" >&2; exit 1; }

TMP=$(mktemp -d /dev/shm/healgate-h2up-bench.XXXXXX)
chmod 755 "$TMP"  # nginx workers run as nobody
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

mkdir -p "$TMP/www/h1" "$TMP/www/h2" "$TMP/logs"
for size in $SIZES; do
  n=$(( ${size%k} * 1024 ))
  head -c "$n" /dev/zero | tr '\0' 'x' > "$TMP/www/h1/$size"
  cp "$TMP/www/h1/$size" "$TMP/www/h2/$size"
done
chmod -R a+rX "$TMP/www"

cat > "$TMP/backend.conf" <<EOF
worker_processes 1; daemon off; pid $TMP/backend.pid; error_log $TMP/logs/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; http2_max_concurrent_streams 256;
  server { listen 127.0.0.1:$B_H1; root $TMP/www; }
  server { listen 127.0.0.1:$B_H2 http2; root $TMP/www; } }
EOF
cat > "$TMP/healgate.toml" <<EOF
[gateway]
listen = ["127.0.0.1:$GATEWAY"]
data_dir = "$TMP/hg"
workers = 1
access_log = false
[admin]
listen = "127.0.0.1:$GATEWAY_ADMIN"
[[upstream]]
name = "over-h1"
servers = ["127.0.0.1:$B_H1"]
routes = ["/h1/"]
protocol = "h1"
[[upstream]]
name = "over-h2"
servers = ["127.0.0.1:$B_H2"]
routes = ["/h2/"]
protocol = "h2"
EOF

start() { # name, command...
  local name=$1; shift
  taskset -c "$SERVER_CPU" "$@" > "$TMP/logs/$name.out" 2>&1 &
  PIDS+=($!)
}
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "h2_upstream.sh: nothing listens on $1" >&2; exit 1
}
start backend nginx -c "$TMP/backend.conf" -p "$TMP"
HEALGATE_LOG=warn start healgate "$HEALGATE" run -c "$TMP/healgate.toml"
wait_port $B_H1; wait_port $B_H2; wait_port $GATEWAY
sleep 1
first=${SIZES%% *}
# The backend really speaks h2c on its h2 port, and the gateway reaches both.
curl -s --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$B_H2/h2/$first" \
  || { echo "h2_upstream.sh: the backend does not serve h2c on $B_H2" >&2; exit 1; }
for proto in h1 h2; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GATEWAY/$proto/$first")
  [ "$code" = 200 ] || { echo "h2_upstream.sh: /$proto/$first answered $code" >&2; cat "$TMP"/logs/*; exit 1; }
done

healgate_pids() { pgrep -f "$HEALGATE run -c $TMP/healgate.toml" | tr '\n' ' '; }
backend_pids() { m=$(cat "$TMP/backend.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')"; }
cpu_ticks() { # pids... → utime+stime in clock ticks
  local sum=0
  for p in "$@"; do
    read -r -a f < "/proc/$p/stat"
    # Fields 14 and 15 (1-based) after a comm without spaces.
    sum=$((sum + f[13] + f[14]))
  done
  echo $sum
}

HZ=$(getconf CLK_TCK)
RESULTS="$TMP/results"
: > "$RESULTS"
gw=$(healgate_pids) be=$(backend_pids)
for round in $(seq "$ROUNDS"); do
  for size in $SIZES; do
    for proto in h1 h2; do
      url="http://127.0.0.1:$GATEWAY/$proto/$size"
      g0=$(cpu_ticks $gw) b0=$(cpu_ticks $be)
      out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url")
      g1=$(cpu_ticks $gw) b1=$(cpu_ticks $be)
      reqs=$(awk '/requests in/ {print $1}' <<<"$out")
      rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
      errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
      us=$(python3 -c "print(round(($g1 - $g0) / $HZ * 1e6 / max($reqs, 1), 2))")
      bus=$(python3 -c "print(round(($b1 - $b0) / $HZ * 1e6 / max($reqs, 1), 2))")
      echo "$round $size $proto $rps $us $bus $reqs ${errs:-}" >> "$RESULTS"
      echo "round $round /$size over $proto: $rps req/s, healgate $us µs CPU/request, backend $bus ${errs:+($errs)}" >&2
    done
  done
done

python3 - "$RESULTS" "$SIZES" <<'EOF'
import statistics, sys
rows = [l.split(None, 7) for l in open(sys.argv[1]) if l.strip()]
sizes = sys.argv[2].split()
med = {}
for size in sizes:
    for proto in ("h1", "h2"):
        sel = [r for r in rows if r[1] == size and r[2] == proto]
        med[size, proto] = tuple(statistics.median(float(r[i]) for r in sel) for i in (3, 4, 5))
print("| wrk h1 → healgate → nginx | upstream protocol | req/s | healgate CPU µs/request | backend CPU µs/request |")
print("| --- | --- | --: | --: | --: |")
for (size, proto), (rps, us, bus) in med.items():
    print(f"| /{size} | {proto} | {rps:,.0f} | {us:.1f} | {bus:.1f} |")
for size in sizes:
    h1, h2 = med[size, "h1"], med[size, "h2"]
    print(f"RATIO upstream_{size}_cpu_per_request h2/h1 = {h2[1] / h1[1]:.2f}")
    print(f"RATIO upstream_{size}_rps h2/h1 = {h2[0] / h1[0]:.2f}")
EOF
