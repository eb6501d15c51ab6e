#!/usr/bin/env python3
"""Capture the seed corpus from real peers: responses of `healgate demo-app` and of
Python's http.server (plain, HTTP/1.0 and chunked), and requests as curl and Python's
urllib send them. Writes fuzz/corpus/<target>/<name> in each target's input format.

    python3 fuzz/seeds.py target/debug/healgate
"""
import http.server
import os
import socket
import subprocess
import sys
import threading
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def save(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def exchange(addr, raw):
    """Send raw request bytes, read the response until the peer closes."""
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(raw)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out
            out += b


def body_input(head, body):
    """The response_body target's input for a captured response."""
    h = head.lower()
    if b"transfer-encoding: chunked" in h:
        return b"\x01\x07" + body
    for line in h.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            n = int(line.split(b":", 1)[1])
            return b"\x00\x07" + n.to_bytes(2, "little") + body
    return b"\x82\x07" + body


def record(name, addr, raw, head_request=False):
    resp = exchange(addr, raw)
    save("first_head", name, raw)
    save("response_head", name, (b"\x01" if head_request else b"\x00") + resp)
    end = resp.find(b"\r\n\r\n")
    if end >= 0 and not head_request:
        save("response_body", name, body_input(resp[:end], resp[end + 4:]))


class Chunked(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Checksum")
            self.send_header("Connection", "close")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world" * 20):
                self.wfile.write(b"%x;n=1\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nX-Checksum: abc\r\n\r\n")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


class Old(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass


def serve(handler):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main():
    binary = sys.argv[1]
    demo = subprocess.Popen([binary, "demo-app", "--port", "0"], stdout=subprocess.PIPE)
    try:
        line = demo.stdout.readline().decode()
        host, port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
        addr = (host, int(port))
        get = "GET {} HTTP/1.1\r\nHost: app\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        for name, path in [("demo-root", "/"), ("demo-bigheader", "/bigheader?kb=2"),
                           ("demo-bad", "/bad"), ("demo-404", "/status/404"),
                           ("demo-204", "/status/204"), ("demo-304", "/status/304"),
                           ("demo-500", "/status/500"), ("demo-missing", "/nothing")]:
            record(name, addr, get.format(path).encode())
        record("demo-head", addr, b"HEAD / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n", True)
        record("demo-http10", addr, b"GET / HTTP/1.0\r\nUser-Agent: ab/2.3\r\n\r\n")
        record("demo-echo", addr, b"POST /echo HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\n"
               b"Content-Length: 13\r\nConnection: close\r\n\r\n{\"a\": [1, 2]}")
        record("demo-echo-chunked", addr, b"POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n")
    finally:
        demo.kill()
        demo.wait()

    os.chdir(HERE)
    new, old = serve(Chunked), serve(Old)
    for name, srv, path in [("py-chunked", new, "/chunked"), ("py-file", new, "/Cargo.toml"),
                            ("py-listing", new, "/"), ("py-404", new, "/missing"),
                            ("py10-file", old, "/Cargo.toml"), ("py10-404", old, "/missing")]:
        raw = ("GET %s HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: identity\r\n"
               "Connection: close\r\n\r\n" % path).encode()
        record(name, srv.server_address, raw)

    # Requests as real clients send them, recorded by a socket that answers 204.
    rec = socket.socket()
    rec.bind(("127.0.0.1", 0))
    rec.listen(4)
    port = rec.getsockname()[1]

    def one():
        c, _ = rec.accept()
        c.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            data += c.recv(65536)
        c.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        c.close()
        return data

    for name, cmd in [("curl-get", ["curl", "-s", "http://127.0.0.1:%d/a/b?c=d" % port]),
                      ("curl-post", ["curl", "-s", "-d", "x=1&y=2", "http://127.0.0.1:%d/form" % port])]:
        p = subprocess.Popen(cmd)
        save("first_head", name, one())
        p.wait()
    t = threading.Thread(target=lambda: urllib.request.urlopen(
        urllib.request.Request("http://127.0.0.1:%d/json" % port, data=b"{}",
                               headers={"Content-Type": "application/json"})).read())
    t.start()
    save("first_head", "urllib-post", one())
    t.join()
    save("first_head", "h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")


if __name__ == "__main__":
    main()
