#!/usr/bin/env bash
# Instructions per proxied request in healgate's user space, counted by callgrind:
# repeatable on a busy machine (wall-clock benchmarks here swing ±20%).
#   bench/callgrind.sh [BINARY] [REQUESTS]
# Runs the demo app as the backend, healgate (one worker, no access log) under
# callgrind, sends REQUESTS keep-alive GETs of 1 KiB, and subtracts a run with none.
set -euo pipefail
BIN=${1:-target/release/healgate}
N=${2:-4000}
T=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp "$T"/cg.* /tmp/ ; rm -rf "$T"' EXIT
"$BIN" demo-app --port 0 >"$T/app.out" 2>/dev/null &
for _ in $(seq 100); do grep -q listening "$T/app.out" && break; sleep 0.05; done
APP=$(sed -n 's/.*listening on //p' "$T/app.out" | head -1)
cat >"$T/gw.toml" <<CFG
[gateway]
listen = ["127.0.0.1:0"]
data_dir = "$T/data"
workers = 1
access_log = false
[admin]
listen = "127.0.0.1:0"
[[upstream]]
name = "backend"
servers = ["$APP"]
routes = ["/"]
CFG
run() { # requests → instructions
  valgrind --tool=callgrind --callgrind-out-file="$T/cg.$1" "$BIN" run -c "$T/gw.toml" >"$T/gw.out" 2>"$T/gw.err" &
  local pid=$!
  for _ in $(seq 600); do grep -q "proxy listening" "$T/gw.out" 2>/dev/null && break; sleep 0.1; done
  local addr; addr=$(sed -n 's/.*proxy listening on http:\/\///p' "$T/gw.out")
  python3 - "$addr" "$1" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
n = int(sys.argv[2])
s = socket.create_connection((host, int(port)))
req = b"GET /bigheader?kb=0 HTTP/1.1\r\nHost: x\r\n\r\n"
buf = b""
for _ in range(n):
    s.sendall(req)
    while True:
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            head = buf[:i].decode()
            ln = int([l.split(":")[1] for l in head.split("\r\n") if l.lower().startswith("content-length")][0])
            if len(buf) >= i + 4 + ln:
                buf = buf[i + 4 + ln:]
                break
        buf += s.recv(65536)
PY
  kill -TERM "$pid"; wait "$pid" || true
  grep -m1 '^summary:' "$T/cg.$1" | awk '{print $2}'
}
base=$(run 1)
full=$(run "$N")
echo "healgate user-space instructions per request: $(( (full - base) / (N - 1) )) ($BIN, $N requests)"
