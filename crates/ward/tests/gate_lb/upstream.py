"""An HTTP/1.1 upstream for the gate_lb tests, on Python's http.server.

    upstream.py NAME PORT STATE_DIR [CERT KEY]

Binds 127.0.0.1:PORT (0: any free port; a restart may name the port it
had) and prints "listening PORT" once it accepts; with CERT and KEY it
speaks HTTPS (TLS 1.3 only). Answers:
  GET /id          200, body NAME
  GET /slow?s=N    200 after N seconds, body NAME
  GET /healthz     200, or 503 while STATE_DIR/NAME.down exists
  other            200, body NAME (any method; a request body is read)
"""

import os
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NAME, PORT, STATE = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        url = urlsplit(self.path)
        if url.path == "/healthz":
            down = os.path.exists(os.path.join(STATE, NAME + ".down"))
            self.answer(503 if down else 200, "down" if down else "ok")
            return
        if url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("s", ["1"])[0]))
        self.answer(200, NAME)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


server = Server(("127.0.0.1", PORT), Handler)
if len(sys.argv) > 5:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.minimum_version = ssl.TLSVersion.TLSv1_3
    tls.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = tls.wrap_socket(server.socket, server_side=True)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
