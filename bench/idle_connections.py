#!/usr/bin/env python3
"""What idle keep-alive client connections cost the gateway, and whether the memory
goes back to the system after they close.

Starts a small keep-alive upstream (in this process) and `healgate run` on free
loopback ports, opens N client connections that each make one request and then stay
open and idle, and reads the gateway's RSS (/proc/PID/status) before, while they are
open, and at moments after they all closed. Everything it starts is stopped by pid.

    bench/idle_connections.py --bin target/release/healgate -n 20000
    bench/idle_connections.py --bin /tmp/healgate-main -n 5000 --after 1,5,15
    bench/idle_connections.py --bin target/release/healgate -n 5000 --tls   # HTTPS

With --tls the connections go to an HTTPS listener (a self-signed ECDSA certificate
made with openssl, TLS 1.3, ALPN http/1.1).

Prints one line per measurement and a summary: KB per idle connection, RSS after close.
"""

import argparse
import http.server
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def one_request(sock):
    sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    got = b""
    while not (b"\r\n\r\n" in got and got.endswith(b"ok")):
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"closed after {got!r}")
        got += chunk
    if not got.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"not a 200: {got[:80]!r}")


def wait_for_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="the healgate binary")
    ap.add_argument("-n", type=int, default=5000, help="idle connections (default 5000)")
    ap.add_argument("--after", default="1,5,15", help="seconds after close to sample RSS")
    ap.add_argument("--settle", type=float, default=10, help="seconds idle before RSS is read")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the gateway")
    ap.add_argument("--tls", action="store_true", help="connect to an HTTPS listener")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, args.n + 4096)
    try:  # root may raise the hard limit too
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        want = min(hard, want)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < args.n + 1024:
        sys.exit(f"RLIMIT_NOFILE {want} is too low for {args.n} connections")

    up = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    up.daemon_threads = True
    threading.Thread(target=up.serve_forever, daemon=True).start()

    port = free_port()
    tmp = tempfile.mkdtemp(prefix="healgate-idle-")
    cfg = os.path.join(tmp, "healgate.toml")
    plain_port, tls_conf, connect = port, "", lambda: socket.create_connection(("127.0.0.1", port))
    if args.tls:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", f"{tmp}/site.key",
             "-out", f"{tmp}/site.pem", "-addext", "subjectAltName=DNS:localhost"],
            check=True, capture_output=True,
        )
        plain_port = free_port()
        tls_conf = (f'[gateway.tls]\nlisten = ["127.0.0.1:{port}"]\n'
                    f'certs = [{{ cert = "{tmp}/site.pem", key = "{tmp}/site.key" }}]\n')
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])

        def connect():
            raw = socket.create_connection(("127.0.0.1", port))
            return ctx.wrap_socket(raw, server_hostname="localhost")
    with open(cfg, "w") as f:
        f.write(
            f'[gateway]\nlisten = ["127.0.0.1:{plain_port}"]\ndata_dir = "{tmp}/data"\n'
            f"workers = 1\naccess_log = false\n"
            + tls_conf +
            f'[gateway.timeouts]\nclient_idle = "600s"\n'
            f"[gateway.limits]\nmax_connections = {args.n + 1000}\n"
            f'[admin]\nlisten = "127.0.0.1:0"\n\n'
            f'[[upstream]]\nname = "up"\nservers = ["127.0.0.1:{up.server_address[1]}"]\n'
            f'routes = ["/"]\n'
        )
    env = dict(os.environ)
    for kv in args.env:
        k, _, v = kv.partition("=")
        env[k] = v
    gw = subprocess.Popen(
        [args.bin, "run", "-c", cfg],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(tmp, "stderr.log"), "w"),
        env=env,
        start_new_session=True,
    )
    socks = []
    try:
        wait_for_port(port, time.monotonic() + 30)
        for _ in range(200):
            with connect() as s:
                one_request(s)
        time.sleep(1)
        before = rss_kb(gw.pid)
        print(f"before: {before / 1024:.1f} MiB")
        t = time.monotonic()
        for _ in range(args.n):
            s = connect()
            one_request(s)
            socks.append(s)
        opened = time.monotonic() - t
        time.sleep(1)
        fresh = rss_kb(gw.pid)
        print(
            f"with {args.n} connections just opened: {fresh / 1024:.1f} MiB "
            f"({(fresh - before) / args.n:.1f} KB each; opened in {opened:.1f} s)"
        )
        time.sleep(args.settle)
        during = rss_kb(gw.pid)
        print(
            f"with {args.n} connections idle {args.settle:g} s: {during / 1024:.1f} MiB "
            f"({(during - before) / args.n:.1f} KB each)"
        )
        for s in socks:
            s.close()
        socks.clear()
        t0 = time.monotonic()
        after = []
        for at in [float(x) for x in args.after.split(",") if x]:
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            r = rss_kb(gw.pid)
            after.append((at, r))
            print(f"{at:g} s after they closed: {r / 1024:.1f} MiB")
        print(
            f"SUMMARY {'https' if args.tls else 'http'} n={args.n} before={before / 1024:.1f}MiB during={during / 1024:.1f}MiB "
            f"per_conn_fresh={(fresh - before) / args.n:.1f}KB "
            f"per_conn_idle={(during - before) / args.n:.1f}KB "
            + " ".join(f"after{at:g}s={r / 1024:.1f}MiB" for at, r in after)
        )
    finally:
        for s in socks:
            s.close()
        os.killpg(gw.pid, signal.SIGTERM)
        try:
            gw.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(gw.pid, signal.SIGKILL)
            gw.wait()
        up.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
