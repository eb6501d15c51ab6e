"""A real gRPC server (grpcio, generic handlers: no protoc) for tests/grpc.rs.

Service test.Echo on 127.0.0.1:<free port>, printed on the first line of stdout:
  Unary         b"fail" aborts FAILED_PRECONDITION with trailing metadata, b"slow"
                sleeps 3 s first; anything else comes back as b"echo:" + it, with
                trailing metadata custom-trailer: ok-trailer.
  ServerStream  three parts 0.4 s apart; b"fail-after-one" sends one part, then
                aborts with trailing metadata (real trailers after DATA).
  ClientStream  every message joined with commas.
  Bidi          each message echoed as it arrives (b"re:" + it).
"""
import sys
import time
from concurrent import futures

import grpc


def ident(b):
    return b


def unary(req, ctx):
    if req == b"fail":
        ctx.set_trailing_metadata((("custom-trailer", "why-not"),))
        ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "nope: precondition failed")
    if req == b"slow":
        time.sleep(3)
    ctx.set_trailing_metadata((("custom-trailer", "ok-trailer"),))
    return b"echo:" + req


def server_stream(req, ctx):
    if req == b"fail-after-one":
        yield b"part0"
        ctx.set_trailing_metadata((("custom-trailer", "after-data"),))
        ctx.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "out of parts")
    for i in range(3):
        yield b"part%d" % i
        if i < 2:
            time.sleep(0.4)


def client_stream(it, ctx):
    return b",".join(it)


def bidi(it, ctx):
    for m in it:
        yield b"re:" + m


handlers = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
    "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
    "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, ident, ident),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident),
}
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
