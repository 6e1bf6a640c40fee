"""A client for the gate_lb tests: Python's http.client over ssl with a
client certificate and keep-alive.

    load.py GATE_HOST:PORT ROOT CERT KEY PATH count N
        N sequential GETs of PATH; prints one JSON object:
        {"bodies": {body: count}, "failures": [..]}
    load.py GATE_HOST:PORT ROOT CERT KEY - tcp N
        N TLS connections, each sending "hello I" and reading a line
        back; prints the lines read as a JSON list.
    load.py GATE_HOST:PORT ROOT CERT KEY PATH upgrade N
        N HTTP/1.1 upgrades (Upgrade: echo) of PATH, each sending "ping"
        through the tunnel; prints [[status line, line read back], ...].
    load.py GATE_HOST:PORT ROOT CERT KEY PATH run THREADS
        GETs from THREADS threads until stdin closes; prints a line
        "ok BODY" or "fail DETAIL" per request, then "done".
"""

import http.client
import json
import ssl
import sys
import threading

addr, root, cert, key, path, mode, n = sys.argv[1:8]
host, port = addr.rsplit(":", 1)
ctx = ssl.create_default_context(cafile=root)
ctx.load_cert_chain(cert, key)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3


class Client:
    def __init__(self):
        self.conn = None

    def get(self):
        """(True, body) or (False, detail). Every exception is a failure:
        the gate closes no keep-alive connection within a test's time."""
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(
                host, int(port), context=ctx, timeout=20)
        try:
            self.conn.request("GET", path)
            resp = self.conn.getresponse()
            body = resp.read().decode(errors="replace")
            if resp.status == 200:
                return True, body
            return False, "%d %s" % (resp.status, body)
        except Exception as e:  # noqa: BLE001 - reported to the test
            self.conn.close()
            self.conn = None
            return False, repr(e)


if mode == "tcp":
    import socket
    got = []
    for i in range(int(n)):
        with socket.create_connection((host, int(port)), timeout=20) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(b"hello %d\n" % i)
                got.append(tls.makefile("rb").readline().decode().strip())
    print(json.dumps(got), flush=True)
elif mode == "upgrade":
    import socket
    got = []
    for i in range(int(n)):
        with socket.create_connection((host, int(port)), timeout=20) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: upgrade\r\n"
                             "Upgrade: echo\r\n\r\n" % (path, host)).encode())
                f = tls.makefile("rb")
                status = f.readline().decode().strip()
                while f.readline() not in (b"\r\n", b""):
                    pass
                tls.sendall(b"ping\n")
                got.append([status, f.readline().decode().strip()])
    print(json.dumps(got), flush=True)
elif mode == "count":
    client, bodies, failures = Client(), {}, []
    for _ in range(int(n)):
        ok, text = client.get()
        if ok:
            bodies[text] = bodies.get(text, 0) + 1
        else:
            failures.append(text)
    print(json.dumps({"bodies": bodies, "failures": failures}), flush=True)
else:
    stop = threading.Event()
    out = threading.Lock()

    def worker():
        client = Client()
        while not stop.is_set():
            ok, text = client.get()
            with out:
                print(("ok " if ok else "fail ") + text, flush=True)

    threads = [threading.Thread(target=worker) for _ in range(int(n))]
    for t in threads:
        t.start()
    sys.stdin.read()
    stop.set()
    for t in threads:
        t.join()
    print("done", flush=True)
