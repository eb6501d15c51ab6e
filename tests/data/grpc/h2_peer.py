"""A misbehaving HTTP/2 (h2c) server for tests/grpc.rs, with the Python h2 package.

MODE refuse: the first request on the first connection gets RST_STREAM
REFUSED_STREAM; every later one is answered 200 "served request N".
MODE goaway: the first connection answers its first request with GOAWAY (last
stream id 0: not processed) and closes; later ones are answered as above.
MODE reset: every request gets RST_STREAM INTERNAL_ERROR (after it was read).
MODE ok: every request is answered.
The port goes to the first line of stdout."""
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.errors
import h2.events

mode = sys.argv[1]
lock = threading.Lock()
seen = {"requests": 0, "connections": 0}


def serve(sock):
    with lock:
        seen["connections"] += 1
        first_conn = seen["connections"] == 1
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    while True:
        data = sock.recv(65535)
        if not data:
            return
        for ev in conn.receive_data(data):
            if not isinstance(ev, h2.events.RequestReceived):
                continue
            with lock:
                seen["requests"] += 1
                n = seen["requests"]
            if mode == "reset":
                conn.reset_stream(ev.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            elif first_conn and n == 1 and mode == "refuse":
                conn.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            elif first_conn and n == 1 and mode == "goaway":
                conn.close_connection(h2.errors.ErrorCodes.NO_ERROR, last_stream_id=0)
                sock.sendall(conn.data_to_send())
                sock.close()
                return
            else:
                body = b"served request %d" % n
                conn.send_headers(ev.stream_id, [(":status", "200"),
                                                 ("content-length", str(len(body)))])
                conn.send_data(ev.stream_id, body, end_stream=True)
        sock.sendall(conn.data_to_send())


s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
