"""Workload API clients nobody here wrote, against a running `ward agent`.

Usage: pyspiffe.py SOCKET_PATH MODE
  MODE "spiffe": py-spiffe (gRPC C-core via grpcio, which sends the
    percent-encoded socket path as :authority): fetch_x509_context,
    fetch_x509_bundles, then stream_x509_contexts on one stream until the
    serial changes (retry_connect=False: a reconnect would be an error).
  MODE "raw": the Python `h2` package sends one FetchX509Bundles request per
    :authority given on stdin (one a line) over its own HTTP/2 connection.
Prints one JSON object.
"""

import json
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events


def serial(cert):
    return format(cert.serial_number, "x")


def with_spiffe(path):
    from spiffe import WorkloadApiClient

    client = WorkloadApiClient("unix://" + path, default_timeout=30)
    ctx = client.fetch_x509_context()
    svid = ctx.default_svid
    bundles = client.fetch_x509_bundles()
    out = {
        "context": {
            "spiffe_id": str(svid.spiffe_id),
            "serial": serial(svid.leaf),
            "chain": len(svid.cert_chain),
            "bundles": sorted(str(b.trust_domain) for b in ctx.x509_bundle_set.bundles),
        },
        "bundles": {
            str(b.trust_domain): sorted(serial(c) for c in b.x509_authorities)
            for b in bundles.bundles
        },
    }
    seen, errors = [], []
    changed = threading.Event()

    def on_success(ctx):
        seen.append(serial(ctx.default_svid.leaf))
        if len(set(seen)) > 1:
            changed.set()

    def on_error(err):
        errors.append(str(err))
        changed.set()

    handle = client.stream_x509_contexts(on_success, on_error, retry_connect=False)
    changed.wait(60)
    handle.cancel()
    client.close()
    out["stream"] = {"serials": seen, "errors": errors}
    return out


def one_raw_request(path, authority):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(path)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(
        stream,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/SpiffeWorkloadAPI/FetchX509Bundles"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("workload.spiffe.io", "true"),
        ],
    )
    conn.send_data(stream, b"\x00\x00\x00\x00\x00", end_stream=True)
    sock.sendall(conn.data_to_send())
    result = {"authority": authority, "headers": {}, "message": b"", "reset": None}
    done = False
    while not done:
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                result["headers"].update((k.decode(), v.decode()) for k, v in event.headers)
            elif isinstance(event, h2.events.DataReceived):
                result["message"] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, stream)
                # One gRPC message: 1 flag byte, 4 length bytes, the message.
                m = result["message"]
                if len(m) >= 5 and len(m) >= 5 + int.from_bytes(m[1:5], "big"):
                    done = True
            elif isinstance(event, h2.events.TrailersReceived):
                result["headers"].update((k.decode(), v.decode()) for k, v in event.headers)
                done = True
            elif isinstance(event, h2.events.StreamReset):
                result["reset"] = int(event.error_code)
                done = True
        sock.sendall(conn.data_to_send())
    sock.close()
    message = result.pop("message")
    result["bundles"] = {}
    if len(message) >= 5:
        from spiffe._proto import workload_pb2

        reply = workload_pb2.X509BundlesResponse.FromString(message[5:])
        # Trust domain -> size of its DER bundle.
        result["bundles"] = {k: len(v) for k, v in reply.bundles.items()}
    return result


def main():
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "spiffe":
        out = with_spiffe(path)
    else:
        out = [one_raw_request(path, a.rstrip("\n")) for a in sys.stdin if a.strip()]
    print(json.dumps(out))


main()
