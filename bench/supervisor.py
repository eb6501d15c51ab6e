#!/usr/bin/env python3
"""Supervisor and AutoHeal figures (stdlib only), with the release binary:

  python3 bench/supervisor.py [target/release/healgate]

1. kill -9 of an instance → its replacement serving (instance_exited → instance_ready),
   five times.
2. The gateway's own memory with 3 demo instances: idle, and after a load
   (wrk if installed, else a Python keep-alive loop).
3. Memory rule detection: /leak?mb=100 against `memory_above = "64MiB"`; time from the
   leak's response (the line already crossed) to `autoheal_fired` and to the recycle start.
4. The gateway's CPU with 20 idle demo instances (sampler + health checks), 20 s.
Every process started here is stopped here.
"""
import json, os, shutil, signal, socket, subprocess, sys, tempfile, time
from datetime import datetime

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/healgate")


def ts(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


class Gateway:
    def __init__(self, config):
        self.dir = tempfile.mkdtemp(prefix="hg-bench-")
        self.cfg = os.path.join(self.dir, "healgate.toml")
        with open(self.cfg, "w") as f:
            f.write(config)
        self.p = subprocess.Popen([BIN, "run", "-c", self.cfg], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        self.addr = None
        for line in self.p.stdout:
            if line.startswith("healgate: proxy listening on http://"):
                self.addr = line.strip().rsplit("/", 1)[1]
            if line.startswith("healgate: admin listening"):
                break

    def events(self, kind=None):
        try:
            with open(os.path.join(self.dir, "data/logs/events.jsonl")) as f:
                evs = [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []
        return [e for e in evs if kind is None or e["kind"] == kind]

    def status(self):
        out = subprocess.run([BIN, "status", "--json", "-c", self.cfg], capture_output=True, text=True)
        return json.loads(out.stdout) if out.returncode == 0 else {"apps": []}

    def ready(self, n, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            apps = self.status()["apps"]
            inst = [i for a in apps for i in a["instances"] if i["state"] == "ready"]
            if len(inst) >= n:
                return inst
            time.sleep(0.1)
        raise SystemExit(f"not {n} ready: {self.status()}")

    def proc_kib(self, key):
        with open(f"/proc/{self.p.pid}/status") as f:
            for l in f:
                if l.startswith(key + ":"):
                    return int(l.split()[1])
        return 0

    def cpu_s(self):
        with open(f"/proc/{self.p.pid}/stat") as f:
            s = f.read()
        fs = s[s.rfind(")") + 2:].split()
        return (int(fs[11]) + int(fs[12])) / os.sysconf("SC_CLK_TCK")

    def get(self, path):
        host, port = self.addr.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        return data

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def app(n, extra=""):
    return (f'[gateway]\nlisten = ["127.0.0.1:0"]\ndata_dir = "data"\naccess_log = false\n[admin]\nlisten = "127.0.0.1:0"\n'
            f'[[app]]\nname = "web"\ncommand = ["{BIN}", "demo-app", "--port", "{{port}}"]\ninstances = {n}\nroutes = ["/"]\n'
            f'health = {{ path = "/healthz" }}\n{extra}')


def load(gw, seconds):
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds}s", f"http://{gw.addr}/"], capture_output=True, text=True).stdout
        return [l.strip() for l in out.splitlines() if "Requests/sec" in l][0]
    end, n = time.time() + seconds, 0
    while time.time() < end:
        gw.get("/")
        n += 1
    return f"{n / seconds:.0f} req/s (python client)"


def main():
    rows = []
    # 1 + 2: restart latency and gateway memory.
    gw = Gateway(app(3))
    try:
        gw.ready(3)
        time.sleep(1)
        rows.append(("gateway RSS, 3 instances idle", f"{gw.proc_kib('VmRSS') / 1024:.1f} MiB"))
        rate = load(gw, 5)
        rows.append(("gateway RSS after load (peak)", f"{gw.proc_kib('VmRSS') / 1024:.1f} MiB ({gw.proc_kib('VmHWM') / 1024:.1f} MiB), {rate}"))
        lat = []
        for k in range(5):
            inst = gw.ready(3)
            victim = inst[k % 3]
            os.kill(victim["pid"], signal.SIGKILL)
            end = time.time() + 20
            while time.time() < end:
                ex = [e for e in gw.events("instance_exited") if e["pid"] == victim["pid"]]
                rd = [e for e in gw.events("instance_ready") if e["instance"] == victim["id"] and ex and ts(e["ts"]) > ts(ex[0]["ts"])]
                if ex and rd:
                    lat.append(ts(rd[0]["ts"]) - ts(ex[0]["ts"]))
                    break
                time.sleep(0.05)
        rows.append(("kill -9 → replacement serving (5 runs)",
                     f"mean {1000 * sum(lat) / len(lat):.0f} ms, min {1000 * min(lat):.0f}, max {1000 * max(lat):.0f} (includes the 500 ms first backoff)"))
    finally:
        gw.stop()
    # 3: memory rule detection.
    rule = '[app.autoheal]\nmin_uptime = "0s"\nmax_recycles = { count = 100, within = "1h" }\n[[app.autoheal.rule]]\nwhen = { memory_above = "64MiB" }\naction = "recycle"\n'
    gw = Gateway(app(2, rule))
    try:
        fired, started = [], []
        for _ in range(5):
            gw.ready(2)
            time.sleep(0.7)
            n = len(gw.events("autoheal_fired"))
            gw.get("/leak?mb=100")
            t0 = time.time()
            end = t0 + 10
            while time.time() < end and len(gw.events("autoheal_fired")) == n:
                time.sleep(0.01)
            f = gw.events("autoheal_fired")[n]
            fired.append(ts(f["ts"]) - t0)
            rec = [e for e in gw.events("instance_recycling") if e["pid"] == f["pid"]]
            if rec:
                started.append(ts(rec[0]["ts"]) - t0)
            while time.time() < end and not [e for e in gw.events("instance_recycled") if e.get("old_pid") == f["pid"]]:
                time.sleep(0.05)
        rows.append(("memory rule: line crossed → autoheal_fired (5 runs)",
                     f"mean {1000 * sum(fired) / len(fired):.0f} ms, max {1000 * max(fired):.0f} ms (sampled every 500 ms)"))
        if started:
            rows.append(("memory rule: line crossed → recycle started", f"mean {1000 * sum(started) / len(started):.0f} ms, max {1000 * max(started):.0f} ms"))
    finally:
        gw.stop()
    # 4: 20 idle instances.
    gw = Gateway(app(20, rule))
    try:
        gw.ready(20, timeout=60)
        time.sleep(2)
        c0, t0 = gw.cpu_s(), time.time()
        time.sleep(20)
        pct = (gw.cpu_s() - c0) / (time.time() - t0) * 100
        rows.append(("gateway CPU, 20 idle instances (sampling 2/s + health checks)", f"{pct:.2f}% of one core"))
    finally:
        gw.stop()
    print("| measure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
