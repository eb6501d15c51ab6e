#!/usr/bin/env bash
# compression.sh - CPU per MiB compressed: healgate's gzip, br and zstd (its default
# levels: brotli 4, zstd 3; gzip at each of GZIP_LEVELS) against nginx's gzip at the
# same gzip levels, in one run, in front of the same backend serving the same body.
#
# One nginx backend (1 worker, :19201) serves /text (64 KiB of English text: Debian's
# GPL-3, LGPL-2.1 and Apache-2.0 licence texts, cut at 65536 bytes) as text/plain.
# In front of it, one worker each, upstream keep-alive, one pair per gzip level L:
#   nginx    :19210+L  gzip on; gzip_comp_level L; gzip_types text/plain
#   healgate 127.0.0.1:0 (learned from its stdout)  [gateway.compression] levels.gzip = L
# For each case, wrk (1 thread, CONNS connections, pinned to CPU 1; servers on CPU 0)
# loads the proxy for DURATION seconds with the case's Accept-Encoding; the proxy's CPU
# is the utime+stime delta of its process tree from /proc/PID/stat. Cases: nginx and
#   healgate gzip at each level, healgate br and zstd, and nginx and healgate without
#   Accept-Encoding (identity: what proxying alone costs).
# Reported per case (median of ROUNDS interleaved rounds): req/s, proxy CPU µs per
# request, proxy CPU ms per MiB of body served (uncompressed MiB), the compression
# share of it (minus the same proxy's identity case), and the encoded size.
# RATIO lines compare healgate's gzip to nginx's at each level.
#
# Usage: bench/compression.sh       (settings via env)
#   BIN=target/release/healgate  DURATION=10  CONNS=16  ROUNDS=3  GZIP_LEVELS="1 5"  SCHED=other|rr
# Needs nginx, wrk, curl, python3 (brotli and zstandard from PyPI to check the bodies:
# scripts/test installs them). Only 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/healgate}
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
ROUNDS=${ROUNDS:-3}
GZIP_LEVELS=${GZIP_LEVELS:-1 5}
SCHED=${SCHED:-other}
BACKEND_PORT=19201

ts()  { date +%H:%M:%S; }
log() { printf '[%s] %s\n' "$(ts)" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$(ts)" "$*" >&2; exit 1; }

for v in DURATION CONNS ROUNDS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
(( DURATION >= 1 && DURATION <= 600 && CONNS >= 1 && ROUNDS >= 1 )) || die "DURATION 1..600, CONNS >= 1, ROUNDS >= 1"
read -r -a LEVELS <<<"$GZIP_LEVELS"
(( ${#LEVELS[@]} >= 1 )) || die "GZIP_LEVELS is empty"
for l in "${LEVELS[@]}"; do [[ $l =~ ^[1-9]$ ]] || die "GZIP_LEVELS: each 1..9 (got '$l')"; done
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
for p in $BACKEND_PORT $(for l in "${LEVELS[@]}"; do echo $((19210 + l)); done); do port_in_use "$p" && die "port $p is in use (a previous run still alive?)"; done

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
mkdir -p "$T/www" "$T/backend"
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
nginx_proxy() {  # nginx_proxy <dir> <port> <gzip level>
  cat >"$1/nginx.conf" <<EOF
$(nginx_common "$1")
http {
$(nginx_temp "$1")
    access_log off;
    keepalive_timeout 600s;
    keepalive_requests 100000000;
    gzip on;
    gzip_comp_level $3;
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
        listen 127.0.0.1:$2 backlog=4096;
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
}
healgate_config() {  # healgate_config <dir> <gzip level>
  cat >"$1/healgate.toml" <<EOF
[gateway]
listen = ["127.0.0.1:0"]
data_dir = "$1/data"
workers = 1
access_log = false

[gateway.compression]
types = ["text/*"]
min_size = "1KiB"
levels = { gzip = $2 }

[admin]
listen = "127.0.0.1:0"

[[upstream]]
name = "backend"
servers = ["127.0.0.1:$BACKEND_PORT"]
routes = ["/"]
EOF

}

# ---------------------------------------------------------------- start
start() {  # start <logfile> cmd... : in the background, pinned to the servers' CPU; its pid joins PIDS
  taskset -c "$SERVER_CPU" "${PRIO[@]}" "${@:2}" >"$1" 2>&1 </dev/null &
  PIDS+=($!)
}
NGINX=$(command -v nginx)
"$NGINX" -t -q -e "$T/backend/error.log" -p "$T/backend" -c "$T/backend/nginx.conf" || die "backend: nginx config invalid"
start "$T/backend/out" "$NGINX" -e "$T/backend/error.log" -p "$T/backend" -c "$T/backend/nginx.conf"
BACKEND_PID=${PIDS[-1]}
declare -A PORT=() PID=()
for l in "${LEVELS[@]}"; do
  d=$T/nginx-$l; mkdir -p "$d"; nginx_proxy "$d" $((19210 + l)) "$l"
  "$NGINX" -t -q -e "$d/error.log" -p "$d" -c "$d/nginx.conf" || die "nginx-$l: config invalid"
  start "$d/out" "$NGINX" -e "$d/error.log" -p "$d" -c "$d/nginx.conf"
  PID[nginx-$l]=${PIDS[-1]}; PORT[nginx-$l]=$((19210 + l))
  d=$T/healgate-$l; mkdir -p "$d"; healgate_config "$d" "$l"
  HEALGATE_LOG=warn start "$d/out" "$BIN" run -c "$d/healgate.toml"
  PID[healgate-$l]=${PIDS[-1]}
  port=""
  for _ in $(seq 100); do
    port=$(sed -n 's|^healgate: proxy listening on http://127.0.0.1:||p' "$d/out" | head -1)
    [[ -n $port ]] && break
    kill -0 "${PID[healgate-$l]}" 2>/dev/null || die "healgate exited: $(tail -5 "$d/out")"
    sleep 0.1
  done
  [[ -n $port ]] || die "healgate did not say where it listens"
  PORT[healgate-$l]=$port
done
for t in backend "${!PORT[@]}"; do
  p=${PORT[$t]:-$BACKEND_PORT}
  for _ in $(seq 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/text") == 200 ]] && break
    sleep 0.1
  done
done
log "backend :$BACKEND_PORT (pid $BACKEND_PID); $(for t in "${!PORT[@]}"; do printf '%s :%s (pid %s) ' "$t" "${PORT[$t]}" "${PID[$t]}"; done); servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"

# ---------------------------------------------------------------- check the bodies
# Each case's answer decodes to the body; its encoded size.
declare -A SIZE=()
CASES=()
for l in "${LEVELS[@]}"; do CASES+=("nginx-$l gzip" "healgate-$l gzip"); done
CASES+=("healgate-${LEVELS[0]} br" "healgate-${LEVELS[0]} zstd" "nginx-${LEVELS[0]} identity" "healgate-${LEVELS[0]} identity")
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
for t in "${!PID[@]}"; do
  hwm=0
  for p in $(pgrep -P "${PID[$t]}") "${PID[$t]}"; do
    k=$(awk '/^VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    (( k > hwm )) && hwm=$k
  done
  echo "PEAK_RSS $t $((hwm / 1024)) MiB (largest process of its tree, VmHWM)"
done | sort
{
  echo "HZ=$HZ DURATION=$DURATION BODY=$BODY"
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
base = {}
for case, (size, (rps, us, ms)) in rows.items():
    if case.endswith(":identity"):
        base[case.split("-")[0]] = ms
for case, (size, (rps, us, ms)) in rows.items():
    server = case.split("-")[0]
    comp = "-" if case.endswith("identity") else f"{ms - base[server]:.2f}"
    name = case.replace(":", " ")
    print(f"| {name} | {rps:,.0f} | {us:.1f} | {ms:.2f} | {comp} | {size:,} | {body / size:.2f} |")
first = None
for case in rows:
    if not case.startswith("nginx-") or not case.endswith(":gzip"):
        continue
    level = case.split("-")[1].split(":")[0]
    first = first or level
    n, h = rows[case], rows[f"healgate-{level}:gzip"]
    nb, hb = base["nginx"], base["healgate"]
    print(f"RATIO gzip-{level} cpu_per_mib healgate/nginx = {h[1][2] / n[1][2]:.2f}")
    print(f"RATIO gzip-{level} compression_cpu_per_mib healgate/nginx = {(h[1][2] - hb) / (n[1][2] - nb):.2f}")
    print(f"RATIO gzip-{level} req_per_s healgate/nginx = {h[1][0] / n[1][0]:.2f}")
    print(f"RATIO gzip-{level} encoded_size healgate/nginx = {h[0] / n[0]:.3f}")
n = rows[f"nginx-{first}:gzip"]
for c in ("br", "zstd"):
    x = rows[f"healgate-{first}:{c}"]
    print(f"RATIO {c} cpu_per_mib healgate_{c}/nginx_gzip-{first} = {x[1][2] / n[1][2]:.2f}  (size {x[0] / n[0]:.3f} of nginx gzip-{first})")
'
