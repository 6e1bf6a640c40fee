"""A SPIFFE bundle endpoint under the federation test's control.

Usage: relay.py DIR. Each connection reads DIR/tls (a NAME: the TLS server
presents DIR/NAME.crt with DIR/NAME.key) and answers any request with 200
and the bytes of DIR/body. Prints "relay: listening on
127.0.0.1:PORT" once bound (port 0: the kernel picks it).
"""

import os
import socket
import ssl
import sys
import threading

DIR = sys.argv[1]


def context(name):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(os.path.join(DIR, name + ".crt"), os.path.join(DIR, name + ".key"))
    return ctx




def read(name):
    with open(os.path.join(DIR, name), "rb") as f:
        return f.read()


def handle(conn):
    try:
        conn.settimeout(10)
        tls = context(read("tls").decode().strip()).wrap_socket(conn, server_side=True)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = tls.recv(4096)
            if not chunk:
                break
            data += chunk
        body = read("body")
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        tls.sendall(head.encode() + body)
        tls.close()
    except Exception as e:  # a refused handshake is expected in some steps
        print(f"relay: {e}", file=sys.stderr, flush=True)
        conn.close()


def main():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    host, port = srv.getsockname()
    print(f"relay: listening on {host}:{port}", file=sys.stderr, flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


main()
