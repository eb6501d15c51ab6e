#!/usr/bin/env bash
# tls.sh - TLS termination, healgate against nginx, one run, same certificate.
#
# One nginx backend (1 worker) serves GET /1k from tmpfs. In front of it, each with
# ONE worker, upstream keep-alive and the same ECDSA P-256 certificate:
#   nginx (listen ssl)  and  healgate ([gateway.tls], workers = 1, access_log = false)
# wrk (1 thread, pinned to CLIENT_CPU) loads each over https in two modes:
#   keepalive:  CONNS connections, many requests each (TLS record cost)
#   handshake:  `Connection: close`, a full handshake per request (no resumption:
#               wrk does not resume sessions, nginx's cache and tickets are off)
# Each round runs the two targets back to back, nginx first in odd rounds and healgate
# first in even ones, so a drift of the host's speed (rounds here vary by ±40 %) hits
# both alike. CPU per request is the server's utime+stime delta (/proc/PID/stat, every
# nginx process / the healgate process) over the requests wrk completed. Prints a
# markdown table of medians, the per-round ratios, and RATIO lines: the median of the
# per-round ratios healgate / nginx (each round's pair ran within seconds).
#
# Usage: bench/tls.sh    (env: DURATION=5 CONNS=50 ROUNDS=8 HS_CONNS=8
#                         SERVER_CPU=0 CLIENT_CPU=1 HEALGATE=target/release/healgate
#                         PORT_BASE=19300)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
CONNS=${CONNS:-50}
HS_CONNS=${HS_CONNS:-8}
ROUNDS=${ROUNDS:-8}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
HEALGATE=${HEALGATE:-target/release/healgate}
PORT_BASE=${PORT_BASE:-19300}
BACKEND=$((PORT_BASE + 1)) NGINX=$((PORT_BASE + 2)) GATEWAY=$((PORT_BASE + 4))
GATEWAY_PLAIN=$((PORT_BASE + 5)) GATEWAY_ADMIN=$((PORT_BASE + 6))

for tool in nginx wrk openssl taskset; do
  command -v $tool >/dev/null || { echo "tls.sh: needs $tool (apt-get install nginx wrk openssl util-linux)" >&2; exit 1; }
done
[ -x "$HEALGATE" ] || { echo "tls.sh: build first: cargo build --release" >&2; exit 1; }

TMP=$(mktemp -d /dev/shm/healgate-tls-bench.XXXXXX)
chmod 755 "$TMP"  # nginx workers run as nobody
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -keyout "$TMP/site.key" -out "$TMP/site.pem" -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
mkdir -p "$TMP/www" "$TMP/logs"
head -c 1024 /dev/zero | tr '\0' 'x' > "$TMP/www/1k"

cat > "$TMP/backend.conf" <<EOF
worker_processes 1; daemon off; pid $TMP/backend.pid; error_log $TMP/logs/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND reuseport; root $TMP/www; } }
EOF
cat > "$TMP/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $TMP/nginx.pid; error_log $TMP/logs/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; }
  server { listen 127.0.0.1:$NGINX ssl; http2 on;
    ssl_certificate $TMP/site.pem; ssl_certificate_key $TMP/site.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off; ssl_session_tickets off;
    location / { proxy_pass http://backend; proxy_http_version 1.1;
                 proxy_set_header Connection ""; } } }
EOF
# nginx 1.22 knows `http2` only as a listen parameter.
if ! nginx -t -c "$TMP/nginx.conf" -p "$TMP" >/dev/null 2>&1; then
  sed -i "s/listen 127.0.0.1:$NGINX ssl; http2 on;/listen 127.0.0.1:$NGINX ssl http2;/" "$TMP/nginx.conf"
fi
cat > "$TMP/healgate.toml" <<EOF
[gateway]
listen = ["127.0.0.1:$GATEWAY_PLAIN"]
data_dir = "$TMP/hg"
workers = 1
access_log = false
[gateway.tls]
listen = ["127.0.0.1:$GATEWAY"]
certs = [{ cert = "$TMP/site.pem", key = "$TMP/site.key" }]
[admin]
listen = "127.0.0.1:$GATEWAY_ADMIN"
[[upstream]]
name = "backend"
servers = ["127.0.0.1:$BACKEND"]
routes = ["/"]
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
  echo "tls.sh: nothing listens on $1" >&2; exit 1
}
start backend nginx -c "$TMP/backend.conf" -p "$TMP"
start nginx nginx -c "$TMP/nginx.conf" -p "$TMP"
HEALGATE_LOG=warn start healgate "$HEALGATE" run -c "$TMP/healgate.toml"
wait_port $BACKEND; wait_port $NGINX; wait_port $GATEWAY
sleep 1
for port in $NGINX $GATEWAY; do
  code=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/1k")
  [ "$code" = 200 ] || { echo "tls.sh: https://127.0.0.1:$port/1k answered $code" >&2; cat "$TMP"/logs/*; exit 1; }
done

# The pids whose CPU counts for a target: every nginx process of the TLS nginx
# (master and worker), the healgate process that serves (not its watchdog).
pids_of() {
  case $1 in
    nginx) m=$(cat "$TMP/nginx.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')" ;;
    healgate) pgrep -f "$HEALGATE run -c $TMP/healgate.toml" | tr '\n' ' ' ;;
  esac
}
cpu_ticks() { # pids... → utime+stime in clock ticks
  local sum=0
  for p in "$@"; do
    read -r -a f < "/proc/$p/stat"
    # Fields 14 and 15 (1-based) after a comm without spaces.
    sum=$((sum + f[13] + f[14]))
  done
  echo $sum
}
port_of() { case $1 in nginx) echo $NGINX ;; healgate) echo $GATEWAY ;; esac; }

HZ=$(getconf CLK_TCK)
RESULTS="$TMP/results"
: > "$RESULTS"
for round in $(seq "$ROUNDS"); do
  for mode in keepalive handshake; do
    order="nginx healgate"
    [ $((round % 2)) = 0 ] && order="healgate nginx"
    for target in $order; do
      pids=$(pids_of $target)
      url="https://127.0.0.1:$(port_of $target)/1k"
      args=(-t1 -c"$CONNS" -d"${DURATION}s" --latency)
      [ "$mode" = handshake ] && args=(-t1 -c"$HS_CONNS" -d"${DURATION}s" -H "Connection: close")
      before=$(cpu_ticks $pids)
      out=$(taskset -c "$CLIENT_CPU" wrk "${args[@]}" "$url")
      after=$(cpu_ticks $pids)
      reqs=$(awk '/requests in/ {print $1}' <<<"$out")
      rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
      errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
      us=$(python3 -c "print(round(($after - $before) / $HZ * 1e6 / max($reqs, 1), 2))")
      echo "$round $mode $target $rps $us $reqs ${errs:-}" >> "$RESULTS"
      echo "round $round $mode $target: $rps req/s, $us µs CPU/request ${errs:+($errs)}" >&2
    done
  done
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.split(None, 6) for l in open(sys.argv[1]) if l.strip()]
med = {}
for mode in ("keepalive", "handshake"):
    for target in ("nginx", "healgate"):
        sel = [r for r in rows if r[1] == mode and r[2] == target]
        med[mode, target] = (statistics.median(float(r[3]) for r in sel),
                             statistics.median(float(r[4]) for r in sel))
print("| https /1k | target | req/s | CPU µs per request |")
print("| --- | --- | --: | --: |")
for (mode, target), (rps, us) in med.items():
    print(f"| {mode} | {target} | {rps:,.0f} | {us:.1f} |")
ratios = {}
for mode in ("keepalive", "handshake"):
    pairs = []
    for rnd in sorted({r[0] for r in rows}, key=int):
        got = {r[2]: r for r in rows if r[0] == rnd and r[1] == mode}
        if "nginx" in got and "healgate" in got:
            n, h = got["nginx"], got["healgate"]
            pairs.append((float(h[4]) / float(n[4]), float(h[3]) / float(n[3])))
    ratios[mode] = pairs
    print(f"{mode} per-round healgate/nginx CPU per request: "
          + " ".join(f"{c:.2f}" for c, _ in pairs))
for mode in ("keepalive", "handshake"):
    pairs = ratios[mode]
    print(f"RATIO tls_{mode}_cpu_per_request healgate/nginx = {statistics.median(c for c, _ in pairs):.2f}")
    print(f"RATIO tls_{mode}_rps healgate/nginx = {statistics.median(r for _, r in pairs):.2f}")
EOF
