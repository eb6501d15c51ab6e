#!/usr/bin/env bash
# compression.sh - CPU per MiB compressed: healgate's gzip, br and zstd (its built-in
# levels: gzip 5, brotli 4, zstd 3) against nginx's gzip at the same gzip level, in one
# run, in front of the same backend serving the same text body.
#
# One nginx backend (1 worker, :19201) serves /text (64 KiB of English text: Debian's
# GPL-3, LGPL-2.1 and Apache-2.0 licence texts, cut at 65536 bytes) as text/plain.
# In front of it, one worker each, upstream keep-alive:
#   nginx   :19202   gzip on; gzip_comp_level $GZIP_LEVEL; gzip_types text/plain
#   healgate (127.0.0.1:0, learned from its stdout)  [gateway.compression] types = ["text/*"]
# For each case, wrk (1 thread, CONNS connections, pinned to CPU 1; servers on CPU 0)
# loads the proxy for DURATION seconds with the case's Accept-Encoding; the proxy's CPU
# is the utime+stime delta of its process tree from /proc/PID/stat. Cases:
#   nginx gzip, healgate gzip, healgate br, healgate zstd, and both without
#   Accept-Encoding (identity: what proxying alone costs).
# Reported per case (median of ROUNDS interleaved rounds): req/s, proxy CPU µs per
# request, proxy CPU ms per MiB of body served (uncompressed MiB), the compression
# share of it (minus the same proxy's identity case), and the encoded size.
# RATIO lines compare healgate's gzip to nginx's.
#
# Usage: bench/compression.sh       (settings via env)
#   BIN=target/release/healgate  DURATION=10  CONNS=16  ROUNDS=3  GZIP_LEVEL=5  SCHED=other|rr
# Needs nginx, wrk, curl, python3 (brotli and zstandard from PyPI to check the bodies:
# scripts/test installs them). Only 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/healgate}
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
ROUNDS=${ROUNDS:-3}
GZIP_LEVEL=${GZIP_LEVEL:-5}
SCHED=${SCHED:-other}
BACKEND_PORT=19201
NGINX_PORT=19202

ts()  { date +%H:%M:%S; }
log() { printf '[%s] %s\n' "$(ts)" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$(ts)" "$*" >&2; exit 1; }

for v in DURATION CONNS ROUNDS GZIP_LEVEL; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
(( DURATION >= 1 && DURATION <= 600 && CONNS >= 1 && ROUNDS >= 1 )) || die "DURATION 1..600, CONNS >= 1, ROUNDS >= 1"
(( GZIP_LEVEL >= 1 && GZIP_LEVEL <= 9 )) || die "GZIP_LEVEL must be 1..9"
export PATH="$PATH:/usr/sbin:/sbin"
for t in nginx wrk curl python3 taskset; do command -v "$t" >/dev/null || die "'$t' not found"; done
[[ -x $BIN ]] || die "no healgate binary at $BIN (cargo build --release, or BIN=...)"
python3 -c "import brotli, zstandard" 2>/dev/null || die "python3 brotli and zstandard are needed to check the bodies (pip install brotli zstandard)"
PRIO=()
case $SCHED in
  other) ;;
  rr) PRIO=(chrt -r 1); [[ $(id -u) -eq 0 ]] || die "SCHED=rr needs root" ;;
  *) die "SCHED must be other or rr" ;;
esac
if (( $(nproc) >= 2 )); then SERVER_CPU=0; CLIENT_CPU=1; else SERVER_CPU=0; CLIENT_CPU=0; fi
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $BACKEND_PORT $NGINX_PORT; do port_in_use "$p" && die "port $p is in use (a previous run still alive?)"; done

T=$(mktemp -d "${TMPDIR:-/tmp}/compressbench.XXXXXX")
chmod 755 "$T"
PIDS=()
cleanup() {
  local rc=$? p
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if (( rc != 0 )); then log "logs kept in $T"; else rm -rf -- "$T"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- the body and configs
mkdir -p "$T/www" "$T/backend" "$T/nginx" "$T/gw"
cat /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/LGPL-2.1 /usr/share/common-licenses/Apache-2.0 \
  | head -c 65536 >"$T/www/text"
BODY=$(stat -c %s "$T/www/text")
(( BODY == 65536 )) || die "could not make a 64 KiB body"
chmod 644 "$T/www/text"

nginx_common() {
  cat <<EOF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_temp() {
  printf '    client_body_temp_path %s/b; proxy_temp_path %s/p; fastcgi_temp_path %s/f; uwsgi_temp_path %s/u; scgi_temp_path %s/s;\n' "$1" "$1" "$1" "$1" "$1"
}
cat >"$T/backend/nginx.conf" <<EOF
$(nginx_common "$T/backend")
http {
$(nginx_temp "$T/backend")
    access_log off;
    sendfile on;
    keepalive_timeout 600s;
    keepalive_requests 100000000;
    types { }
    default_type text/plain;
    server {
        listen 127.0.0.1:$BACKEND_PORT backlog=4096;
        root $T/www;
        location = /text { }
        location / { return 404; }
    }
}
EOF
cat >"$T/nginx/nginx.conf" <<EOF
$(nginx_common "$T/nginx")
http {
$(nginx_temp "$T/nginx")
    access_log off;
    keepalive_timeout 600s;
    keepalive_requests 100000000;
    gzip on;
    gzip_comp_level $GZIP_LEVEL;
    gzip_types text/plain;
    gzip_min_length 1024;
    gzip_proxied any;
    gzip_vary on;
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 600s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF
cat >"$T/gw/healgate.toml" <<EOF
[gateway]
listen = ["127.0.0.1:0"]
data_dir = "$T/gw/data"
workers = 1
access_log = false

[gateway.compression]
types = ["text/*"]
min_size = "1KiB"

[admin]
listen = "127.0.0.1:0"

[[upstream]]
name = "backend"
servers = ["127.0.0.1:$BACKEND_PORT"]
routes = ["/"]
EOF

# ---------------------------------------------------------------- start
start() {  # start <logfile> cmd... : pinned to the servers' CPU; prints the pid
  taskset -c "$SERVER_CPU" "${PRIO[@]}" "${@:2}" >"$1" 2>&1 </dev/null &
  PIDS+=($!)
}
NGINX=$(command -v nginx)
for d in backend nginx; do
  "$NGINX" -t -q -e "$T/$d/error.log" -p "$T/$d" -c "$T/$d/nginx.conf" || die "$d: nginx config invalid"
done
start "$T/backend/out" "$NGINX" -e "$T/backend/error.log" -p "$T/backend" -c "$T/backend/nginx.conf"
BACKEND_PID=${PIDS[-1]}
start "$T/nginx/out" "$NGINX" -e "$T/nginx/error.log" -p "$T/nginx" -c "$T/nginx/nginx.conf"
NGINX_PID=${PIDS[-1]}
HEALGATE_LOG=warn start "$T/gw/out" "$BIN" run -c "$T/gw/healgate.toml"
GW_PID=${PIDS[-1]}
GW_PORT=""
for _ in $(seq 100); do
  GW_PORT=$(sed -n 's|^healgate: proxy listening on http://127.0.0.1:||p' "$T/gw/out" | head -1)
  [[ -n $GW_PORT ]] && break
  kill -0 "$GW_PID" 2>/dev/null || die "healgate exited: $(tail -5 "$T/gw/out")"
  sleep 0.1
done
[[ -n $GW_PORT ]] || die "healgate did not say where it listens"
declare -A PORT=([nginx]=$NGINX_PORT [healgate]=$GW_PORT)
declare -A PID=([nginx]=$NGINX_PID [healgate]=$GW_PID)
for p in $BACKEND_PORT $NGINX_PORT $GW_PORT; do
  for _ in $(seq 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/text") == 200 ]] && break
    sleep 0.1
  done
done
log "backend :$BACKEND_PORT (pid $BACKEND_PID), nginx :$NGINX_PORT (pid $NGINX_PID), healgate :$GW_PORT (pid $GW_PID), servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"

# ---------------------------------------------------------------- check the bodies
# Each case's answer decodes to the body; its encoded size.
declare -A SIZE=()
CASES=("nginx gzip" "healgate gzip" "healgate br" "healgate zstd" "nginx identity" "healgate identity")
for c in "${CASES[@]}"; do
  read -r target coding <<<"$c"
  hdr=(); [[ $coding != identity ]] && hdr=(-H "Accept-Encoding: $coding")
  got=$(curl -s "${hdr[@]}" -D "$T/head" -o "$T/enc" -w '%{size_download}' "http://127.0.0.1:${PORT[$target]}/text")
  ce=$(tr -d '\r' <"$T/head" | awk -F': ' 'tolower($1)=="content-encoding"{print tolower($2)}')
  [[ $coding == identity && -z $ce || $ce == "$coding" ]] || die "$c: Content-Encoding '${ce}'"
  python3 - "$coding" "$T/enc" "$T/www/text" <<'PY' || die "$c: the body does not decode to the original"
import sys, zlib
coding, enc, orig = sys.argv[1], open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
if coding == "gzip": out = zlib.decompress(enc, wbits=31)
elif coding == "br":
    import brotli; out = brotli.decompress(enc)
elif coding == "zstd":
    import zstandard; out = zstandard.ZstdDecompressor().decompressobj().decompress(enc)
else: out = enc
sys.exit(0 if out == orig else 1)
PY
  SIZE[$c]=$got
done
log "bodies check out: $(for c in "${CASES[@]}"; do printf '%s=%s ' "${c// /:}" "${SIZE[$c]}"; done)"

# ---------------------------------------------------------------- load
ticks() {  # ticks <pid>: utime+stime of the process and its descendants, in clock ticks
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
stats = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            s = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        f = s[s.rindex(")") + 2:].split()
        stats[int(d)] = (int(f[1]), int(f[11]) + int(f[12]))
tree, todo = set(), [root]
while todo:
    p = todo.pop()
    tree.add(p)
    todo += [c for c, (pp, _) in stats.items() if pp == p and c not in tree]
print(sum(stats[p][1] for p in tree if p in stats))
PY
}
HZ=$(getconf CLK_TCK)
declare -A RESULTS=()
for ((r = 1; r <= ROUNDS; r++)); do
  for c in "${CASES[@]}"; do
    read -r target coding <<<"$c"
    hdr=(); [[ $coding != identity ]] && hdr=(-H "Accept-Encoding: $coding")
    url="http://127.0.0.1:${PORT[$target]}/text"
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d1s "${hdr[@]}" "$url" >/dev/null   # warm-up
    before=$(ticks "${PID[$target]}")
    out=$(taskset -c "$CLIENT_CPU" "${PRIO[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" "${hdr[@]}" "$url")
    after=$(ticks "${PID[$target]}")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    [[ -z $non2xx ]] || die "$c: $non2xx non-2xx answers"
    RESULTS[$c]+="$reqs $((after - before));"
    log "round $r/$ROUNDS $c: $reqs requests, $((after - before)) ticks"
  done
done

# ---------------------------------------------------------------- report
{
  echo "HZ=$HZ DURATION=$DURATION BODY=$BODY GZIP_LEVEL=$GZIP_LEVEL"
  for c in "${CASES[@]}"; do echo "CASE ${c// /:} ${SIZE[$c]} ${RESULTS[$c]}"; done
} | python3 -c '
import sys, statistics
lines = sys.stdin.read().split("\n")
env = dict(kv.split("=") for kv in lines[0].split())
hz, dur, body = int(env["HZ"]), int(env["DURATION"]), int(env["BODY"])
rows = {}
for l in lines[1:]:
    if not l.startswith("CASE "): continue
    _, case, size, runs = l.split(" ", 3)
    per = []
    for run in filter(None, runs.split(";")):
        reqs, ticks = map(int, run.split())
        cpu = ticks / hz
        per.append((reqs / dur, cpu / reqs * 1e6, cpu * 1e3 / (reqs * body / 2**20)))
    rows[case] = (int(size), [statistics.median(x) for x in zip(*per)])
print(f"| case | req/s | proxy CPU µs/req | proxy CPU ms per MiB served | compression ms per MiB (minus identity) | encoded bytes | ratio |")
print("|---|--:|--:|--:|--:|--:|--:|")
for case, (size, (rps, us, ms)) in rows.items():
    target = case.split(":")[0]
    base = rows[target + ":identity"][1][2]
    comp = "-" if case.endswith("identity") else f"{ms - base:.2f}"
    name = case.replace(":", " ")
    print(f"| {name} | {rps:,.0f} | {us:.1f} | {ms:.2f} | {comp} | {size:,} | {body / size:.2f} |")
n, h = rows["nginx:gzip"], rows["healgate:gzip"]
nb, hb = rows["nginx:identity"][1][2], rows["healgate:identity"][1][2]
print(f"RATIO gzip cpu_per_mib healgate/nginx = {h[1][2] / n[1][2]:.2f}")
print(f"RATIO gzip compression_cpu_per_mib healgate/nginx = {(h[1][2] - hb) / (n[1][2] - nb):.2f}")
print(f"RATIO gzip req_per_s healgate/nginx = {h[1][0] / n[1][0]:.2f}")
print(f"RATIO gzip encoded_size healgate/nginx = {h[0] / n[0]:.3f}")
for c in ("br", "zstd"):
    x = rows["healgate:" + c]
    print(f"RATIO {c} cpu_per_mib healgate_{c}/nginx_gzip = {x[1][2] / n[1][2]:.2f}  (size {x[0] / n[0]:.3f} of nginx gzip)")
'
