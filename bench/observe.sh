#!/usr/bin/env bash
# The cost of observing: a /metrics scrape and a history read with N instances
# (default 20) of the demo app, after some traffic. Prints min/median/max in ms.
#   bench/observe.sh [N] [BINARY]
set -euo pipefail
n=${1:-20}
bin=${2:-$(cd "$(dirname "$0")/.." && pwd)/target/release/healgate}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
cat > "$dir/healgate.toml" <<TOML
[gateway]
listen = ["127.0.0.1:0"]
data_dir = "$dir/data"
access_log = false
[admin]
listen = "127.0.0.1:0"
[[app]]
name = "web"
command = ["$bin", "demo-app", "--port", "{port}"]
instances = $n
routes = ["/"]
TOML
"$bin" run -c "$dir/healgate.toml" > "$dir/out" 2> "$dir/err" &
pid=$!
for _ in $(seq 100); do grep -q "admin listening" "$dir/out" 2>/dev/null && break; sleep 0.1; done
proxy=$(sed -n 's/^healgate: proxy listening on //p' "$dir/out")
admin=$(sed -n 's/^healgate: admin listening on //p' "$dir/out")
token=$(cat "$dir/data/admin.token")
for _ in $(seq 300); do
  ready=$(curl -s -H "Authorization: Bearer $token" "$admin/api/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["apps"][0]["ready"])' 2>/dev/null || echo 0)
  [ "$ready" = "$n" ] && break; sleep 0.2
done
echo "instances ready: $ready of $n"
if command -v wrk >/dev/null; then wrk -t1 -c8 -d3s "$proxy/" >/dev/null; fi
sleep 2
measure() {
  python3 - "$@" <<'PY'
import sys, time, urllib.request, statistics
url, token = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
times, size = [], 0
for _ in range(50):
    t = time.perf_counter(); body = urllib.request.urlopen(req).read(); times.append((time.perf_counter() - t) * 1000); size = len(body)
times.sort()
print(f"{url.split('/',3)[3]:<40} {size:>8} bytes  min {times[0]:.2f} ms  median {statistics.median(times):.2f} ms  max {times[-1]:.2f} ms")
PY
}
measure "$admin/metrics" "$token"
measure "$admin/api/v1/history?app=web" "$token"
measure "$admin/api/v1/status" "$token"
