"""A real gRPC client (grpcio, raw bytes) for tests/grpc.rs: runs the calls a mode
names against ADDR (h2c, prior knowledge; or TLS when a CA file and a server name
follow the mode) and prints one JSON object of results.

Each result: {"ok": ..., "trailers": {...}} or {"code": "UNAVAILABLE", "details": ...,
"md": {...}} (initial and trailing metadata together)."""
import json
import queue
import sys
import time

import grpc

addr, mode = sys.argv[1], sys.argv[2]
if len(sys.argv) > 4:
    with open(sys.argv[3], "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    ch = grpc.secure_channel(addr, creds, options=(("grpc.ssl_target_name_override", sys.argv[4]),))
else:
    ch = grpc.insecure_channel(addr)


def ident(b):
    return b


def method(kind, name):
    return getattr(ch, kind)("/test.Echo/" + name, request_serializer=ident,
                             response_deserializer=ident)


def text(v):
    return v.decode("latin-1") if isinstance(v, bytes) else v


def metadata(*parts):
    out = {}
    for part in parts:
        for k, v in part or ():
            out[k] = text(v)
    return out


def failed(e):
    return {"code": e.code().name, "details": e.details(),
            "md": metadata(e.initial_metadata(), e.trailing_metadata())}


def unary(req):
    try:
        resp, call = method("unary_unary", "Unary").with_call(req, timeout=10)
        return {"ok": text(resp), "trailers": metadata(call.trailing_metadata())}
    except grpc.RpcError as e:
        return failed(e)


def server_stream(req):
    start = time.monotonic()
    parts, at = [], []
    call = method("unary_stream", "ServerStream")(req, timeout=10)
    try:
        for m in call:
            parts.append(text(m))
            at.append(time.monotonic() - start)
        return {"ok": parts, "at": at, "trailers": metadata(call.trailing_metadata())}
    except grpc.RpcError as e:
        r = failed(e)
        r["parts"] = parts
        return r


def client_stream():
    def gen():
        for m in (b"a", b"b", b"c"):
            yield m
            time.sleep(0.2)
    try:
        return {"ok": text(method("stream_unary", "ClientStream")(gen(), timeout=10))}
    except grpc.RpcError as e:
        return failed(e)


def bidi():
    # Lock step: the next message goes only after the echo of the last came back,
    # so a gateway that buffered either direction would stall this call.
    echoes = queue.Queue()

    def gen():
        for i in range(3):
            yield b"m%d" % i
            echoes.get(timeout=5)
    out = []
    try:
        for r in method("stream_stream", "Bidi")(gen(), timeout=10):
            out.append(text(r))
            echoes.put(r)
        return {"ok": out}
    except grpc.RpcError as e:
        r = failed(e)
        r["parts"] = out
        return r


results = {}
if mode == "all":
    results["unary"] = unary(b"ping")
    results["fail"] = unary(b"fail")
    results["server_stream"] = server_stream(b"go")
    results["fail_after_one"] = server_stream(b"fail-after-one")
    results["client_stream"] = client_stream()
    results["bidi"] = bidi()
    results["slow"] = unary(b"slow")
elif mode == "tls":
    results["unary"] = unary(b"ping")
    results["fail"] = unary(b"fail")
    results["fail_after_one"] = server_stream(b"fail-after-one")
    results["bidi"] = bidi()
elif mode == "unary":
    results["unary"] = unary(b"ping")
print(json.dumps(results), flush=True)
