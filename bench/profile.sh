#!/usr/bin/env bash
# Profile healgate's CPU per request: nginx backend (:19001, same config as
# ../shared/bench/compare.sh) + healgate (:19104) on CPU 0, wrk on CPU 1.
#
#   bench/profile.sh [BIN]              BIN defaults to /tmp/healgate-bench-bin
#   MODE=dhat bench/profile.sh [BIN]    allocation profile under valgrind's DHAT
#
# Env: MODE (perf|dhat, perf), DURATION (load window, 15), STRACE_S (strace window, 5),
#      URLPATH (/1k or /64k, /1k), H2 (1 = h2load with h2c prior knowledge, 0 = wrk),
#      SCHED (rr|other, rr), OUT (result dir, /tmp/healgate-profile), FREQ (perf Hz, 1999).
# MODE=perf writes to $OUT: perf.data (dwarf call graphs), perf-self.txt,
#   perf-children.txt, strace.txt (syscall counts over STRACE_S s), wrk-*.txt,
#   cpu.txt (gateway µs/req over 10 s without any tracer).
# MODE=dhat writes $OUT/dhat.json (open with valgrind's dh_view.html) and wrk-dhat.txt:
#   the gateway runs under `valgrind --tool=dhat` for DURATION s of load, then gets TERM.
# Every process it starts is killed by PID on exit.
set -euo pipefail
BIN=${1:-/tmp/healgate-bench-bin}
HERE=$(cd "$(dirname "$0")" && pwd)
DURATION=${DURATION:-15}
STRACE_S=${STRACE_S:-5}
SCHED=${SCHED:-rr}
OUT=${OUT:-/tmp/healgate-profile}
FREQ=${FREQ:-1999}
MODE=${MODE:-perf}
URLPATH=${URLPATH:-/1k}
H2=${H2:-0}
mkdir -p "$OUT"
T=$(mktemp -d /dev/shm/hgprof.XXXXXX)
PIDS=()   # long-lived: backend, gateway
CUR=      # the wrk / perf / strace running now
AUX=
cleanup() {
  for p in $CUR $AUX "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in $CUR $AUX "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  [[ ${KEEP:-0} == 1 ]] || rm -rf "$T"
}
trap cleanup EXIT INT TERM

PRIO=()
[[ $SCHED == rr ]] && PRIO=(chrt -r 1)

mkdir -p "$T/www" "$T/backend"
head -c 768 /dev/urandom | base64 -w0 >"$T/www/1k"
head -c 49152 /dev/urandom | base64 -w0 >"$T/www/64k"
chmod 755 "$T" "$T/www"; chmod 644 "$T/www/"*
cat >"$T/backend/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $T/backend/nginx.pid;
error_log $T/backend/error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $T/backend/tmp_body;
    proxy_temp_path       $T/backend/tmp_proxy;
    fastcgi_temp_path     $T/backend/tmp_fastcgi;
    uwsgi_temp_path       $T/backend/tmp_uwsgi;
    scgi_temp_path        $T/backend/tmp_scgi;
    access_log off;
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_timeout 600s; keepalive_requests 100000000;
    open_file_cache max=64 inactive=600s; open_file_cache_valid 600s;
    types { } default_type application/octet-stream;
    server {
        listen 127.0.0.1:19001 backlog=4096;
        root $T/www;
        location = /1k  { }
        location = /64k { }
        location / { return 404; }
    }
}
EOF
for port in 19001 19104; do
  if ss -Hltn "sport = :$port" | grep -q .; then echo "port $port in use" >&2; exit 1; fi
done
taskset -c 0 "${PRIO[@]}" nginx -e "$T/backend/error.log" -p "$T/backend" -c "$T/backend/nginx.conf" &
PIDS+=($!)
if [[ $MODE == dhat ]]; then
  taskset -c 0 valgrind --tool=dhat --dhat-out-file="$OUT/dhat.json" \
    "$BIN" run -c "$HERE/healgate.toml" 2>"$OUT/gateway.stderr" &
else
  taskset -c 0 "${PRIO[@]}" "$BIN" run -c "$HERE/healgate.toml" 2>"$OUT/gateway.stderr" &
fi
GW=$!; PIDS+=($GW)
for _ in $(seq 100); do
  curl -fs -o /dev/null http://127.0.0.1:19104/1k && break; sleep 0.2
done
curl -fs http://127.0.0.1:19104/1k | cmp - "$T/www/1k"

wrk_run() {  # wrk_run <seconds> <outfile>: the load (wrk, or h2load when H2=1)
  if [[ $H2 == 1 ]]; then
    taskset -c 1 "${PRIO[@]}" h2load -t1 -c50 -m1 -D"$1" "http://127.0.0.1:19104$URLPATH" >"$2" 2>&1 &
  else
    taskset -c 1 "${PRIO[@]}" wrk -t1 -c50 -d"$1"s --latency "http://127.0.0.1:19104$URLPATH" >"$2" 2>&1 &
  fi
  CUR=$!; wait "$CUR"; CUR=
}
reqs() {  # completed requests in a wrk or h2load output
  awk '/requests in/{print $1} /^requests:/{for(i=1;i<=NF;i++) if($(i+1) ~ /^succeeded/) print $i}' "$1"
}
ticks() { awk '{print $14+$15}' "/proc/$GW/stat"; }   # utime+stime, clock ticks
uticks() { awk '{print $14}' "/proc/$GW/stat"; }      # utime only

if [[ $MODE == dhat ]]; then
  wrk_run "$DURATION" "$OUT/wrk-dhat.txt"
  kill -TERM "$GW"; wait "$GW" || true; PIDS=("${PIDS[0]}")
  echo "dhat: $(reqs "$OUT/wrk-dhat.txt") requests (+1 check request); see $OUT/dhat.json"
  exit 0
fi

# 1. warm-up, then CPU per request without any tracer attached.
wrk_run 3 "$OUT/wrk-warmup.txt"
t0=$(ticks); u0=$(uticks); wrk_run 10 "$OUT/wrk-plain.txt"; t1=$(ticks); u1=$(uticks)
n=$(reqs "$OUT/wrk-plain.txt"); hz=$(getconf CLK_TCK)
echo "plain: $n requests, gateway CPU $(( (t1-t0)*1000000/hz/n )) us/req" \
     "(user $(( (u1-u0)*1000000/hz/n )), sys $(( (t1-t0-u1+u0)*1000000/hz/n )))" | tee "$OUT/cpu.txt"

# 1b. syscalls per request under full load: kernel tracepoint counters (cheap, unlike strace).
EV=$(printf 'syscalls:sys_enter_%s,' writev write sendto sendmsg recvfrom read readv epoll_wait epoll_ctl futex accept4 setsockopt)
taskset -c 1 perf stat -x, -e "${EV%,}" -p "$GW" -o "$OUT/syscalls.csv" -- sleep 5 >/dev/null 2>&1 &
AUX=$!
sleep 0.2
wrk_run 5 "$OUT/wrk-syscalls.txt"
wait "$AUX" || true; AUX=
echo "requests in the window: $(reqs "$OUT/wrk-syscalls.txt") (window ends ~0.2 s after wrk)" >>"$OUT/syscalls.csv"

# 2. perf with DWARF call graphs over DURATION s of load.
taskset -c 1 perf record -F "$FREQ" --call-graph dwarf,16384 -o "$OUT/perf.data" -p "$GW" -- sleep "$DURATION" \
  >"$OUT/perf-record.log" 2>&1 &
AUX=$!
sleep 0.3
wrk_run "$DURATION" "$OUT/wrk-perf.txt"
wait "$AUX" || true; AUX=

# 3. strace -c over STRACE_S s of load (counts only; strace slows the gateway down).
taskset -c 1 strace -c -f -p "$GW" -o "$OUT/strace.txt" &
AUX=$!
sleep 0.5
wrk_run "$STRACE_S" "$OUT/wrk-strace.txt"
kill -INT "$AUX"; wait "$AUX" || true; AUX=
echo "strace window: $(reqs "$OUT/wrk-strace.txt") requests" >>"$OUT/strace.txt"

# 4. reports (after the servers are gone, so they do not skew anything)
cleanup; PIDS=(); trap - EXIT
perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio --percent-limit 0.3 -g none \
  >"$OUT/perf-self.txt" 2>/dev/null
perf report -i "$OUT/perf.data" --children --sort symbol --stdio --percent-limit 1 -g none \
  >"$OUT/perf-children.txt" 2>/dev/null
echo "results in $OUT"
