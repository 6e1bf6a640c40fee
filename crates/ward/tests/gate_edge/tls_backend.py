"""A TLS backend for the passthrough tests (Python's ssl, i.e. OpenSSL).

argv: CERT KEY EXPECT_PROXY_V2(0|1). Prints its port, then for each
connection: (optionally) reads a PROXY v2 header, completes a TLS
handshake, greets with the client address it was told (or saw), and
echoes one line.
"""
import socket
import ssl
import struct
import sys
import threading

cert, key, expect_proxy = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(64)
print(sock.getsockname()[1], flush=True)


def read_exact(c, n):
    out = b""
    while len(out) < n:
        chunk = c.recv(n - len(out))
        if not chunk:
            raise EOFError("closed inside the PROXY header")
        out += chunk
    return out


def serve(c, addr):
    try:
        c.settimeout(20)
        client = "%s:%d" % addr
        if expect_proxy:
            head = read_exact(c, 16)
            assert head[:12] == b"\r\n\r\n\x00\r\nQUIT\n", head
            assert head[12] == 0x21 and head[13] == 0x11, head
            body = read_exact(c, struct.unpack("!H", head[14:16])[0])
            src = socket.inet_ntoa(body[0:4])
            client = "%s:%d" % (src, struct.unpack("!H", body[8:10])[0])
        t = ctx.wrap_socket(c, server_side=True)
        t.sendall(b"hello from backend, client=" + client.encode() + b"\n")
        line = t.recv(1024)
        t.sendall(b"echo:" + line)
        t.unwrap()  # close_notify: a clean end for s_client
        t.close()
    except Exception as e:  # the test reads stderr when something is off
        print("backend error:", e, file=sys.stderr, flush=True)
        c.close()


while True:
    conn, peer = sock.accept()
    threading.Thread(target=serve, args=(conn, peer), daemon=True).start()
