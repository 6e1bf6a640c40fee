"""A gRPC client for the gate's tests, on Python's grpcio: mTLS to the
gate at 127.0.0.1:PORT (server name "localhost"), one scenario per run,
its results as one JSON object on stdout.

usage: grpc_client.py PORT ROOT CERT KEY SCENARIO"""

import json
import sys
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE = "/ward.test.Echo/"
BIG = 64 << 20


def channel(port, root, cert, key):
    creds = grpc.ssl_channel_credentials(
        root_certificates=open(root, "rb").read(),
        private_key=open(key, "rb").read(),
        certificate_chain=open(cert, "rb").read(),
    )
    return grpc.secure_channel(
        "127.0.0.1:%s" % port,
        creds,
        options=[
            ("grpc.ssl_target_name_override", "localhost"),
            ("grpc.max_receive_message_length", BIG),
            ("grpc.max_send_message_length", BIG),
        ],
    )


def failure(e):
    return {"code": e.code().name, "details": e.details()}


def calls(ch):
    out = {}
    unary = ch.unary_unary(SERVICE + "Unary")
    out["unary"] = unary(b"hello", timeout=10).decode()
    out["whoami"] = json.loads(unary(b"whoami", timeout=10))
    stream = ch.unary_stream(SERVICE + "ServerStream")
    out["server_stream"] = [m.decode() for m in stream(b"5", timeout=10)]
    client = ch.stream_unary(SERVICE + "ClientStream")
    out["client_stream"] = client(iter([b"a", b"bb", b"ccc"]), timeout=10).decode()
    bidi = ch.stream_stream(SERVICE + "Bidi")
    out["bidi"] = [m.decode() for m in bidi(iter([b"x", b"y", b"z"]), timeout=10)]
    big = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    back = unary(big, timeout=30)
    out["big"] = {"sent": len(big), "back": len(back), "same": back == big}
    # A long-lived bidirectional stream: messages one at a time, each
    # answered before the next is sent.
    import queue
    q = queue.Queue()

    def gen():
        while True:
            m = q.get()
            if m is None:
                return
            yield m

    replies = bidi(gen(), timeout=30)
    echoed = []
    for i in range(20):
        q.put(b"m%d" % i)
        echoed.append(next(replies).decode())
        time.sleep(0.01)
    q.put(None)
    out["long_lived"] = echoed
    try:
        unary(b"fail", timeout=10)
        out["upstream_status"] = "OK"
    except grpc.RpcError as e:
        out["upstream_status"] = failure(e)
    h = health_pb2_grpc.HealthStub(ch)
    out["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(
        h.Check(health_pb2.HealthCheckRequest(service="ward.test.Echo"), timeout=10).status
    )
    return out


def deadline(ch):
    unary = ch.unary_unary(SERVICE + "Unary")
    out = {}
    seen = json.loads(unary(b"deadline", timeout=5))
    out["remaining"] = seen["remaining"]
    start = time.monotonic()
    try:
        unary(b"sleep:3", timeout=0.5)
        out["expired"] = "OK"
    except grpc.RpcError as e:
        out["expired"] = failure(e)
    out["elapsed"] = time.monotonic() - start
    return out


def cancel(ch):
    hold = ch.unary_stream(SERVICE + "Hold")
    call = hold(b"cancel-me", timeout=30)
    first = next(call).decode()
    call.cancel()
    try:
        next(call)
        after = "more"
    except grpc.RpcError as e:
        after = e.code().name
    return {"first": first, "after": after}


def reset(ch):
    # Bidirectional, so the upstream can wait for a second message, sent
    # only once the first answer is here, before it resets the stream.
    bidi = ch.stream_stream(SERVICE + "Hold")
    have_first = threading.Event()

    def requests():
        yield b"x"
        have_first.wait(10)
        yield b"y"

    call = bidi(requests(), timeout=10)
    out = {}
    try:
        out["first"] = next(call).decode()
        have_first.set()
        next(call)
        out["after"] = "more"
    except grpc.RpcError as e:
        out["after"] = e.code().name
    except StopIteration:
        out["after"] = "end"
    return out


def reload(ch):
    """The upstream's view of the gate's client certificate before and
    after a reload (the test reloads the gate between "EVENT ready" and a
    line on stdin), and a bidirectional stream open across it."""
    import queue
    unary = ch.unary_unary(SERVICE + "Unary")
    out = {"before": json.loads(unary(b"peer", timeout=10))}
    q = queue.Queue()

    def gen():
        while True:
            m = q.get()
            if m is None:
                return
            yield m

    replies = ch.stream_stream(SERVICE + "Bidi")(gen(), timeout=60)
    q.put(b"m0")
    out["stream_before"] = next(replies).decode()
    print("EVENT ready", flush=True)
    sys.stdin.readline()
    q.put(b"m1")
    out["stream_after"] = next(replies).decode()
    out["after"] = json.loads(unary(b"peer", timeout=10))
    q.put(None)
    out["stream_end"] = [m.decode() for m in replies]
    return out


def single(ch, method, payload=b"hello"):
    try:
        return {"ok": ch.unary_unary(SERVICE + method)(payload, timeout=10).decode()}
    except grpc.RpcError as e:
        return failure(e)


def main():
    port, root, cert, key, scenario = sys.argv[1:6]
    ch = channel(port, root, cert, key)
    if scenario == "calls":
        out = calls(ch)
    elif scenario == "deadline":
        out = deadline(ch)
    elif scenario == "cancel":
        out = cancel(ch)
    elif scenario == "reset":
        out = reset(ch)
    elif scenario == "reload":
        out = reload(ch)
    elif scenario.startswith("method:"):
        out = single(ch, scenario[len("method:"):])
    elif scenario.startswith("path:"):
        try:
            ch.unary_unary(scenario[len("path:"):])(b"x", timeout=10)
            out = {"ok": True}
        except grpc.RpcError as e:
            out = failure(e)
    elif scenario == "big_metadata":
        try:
            ch.unary_unary(SERVICE + "Unary")(
                b"x", timeout=10, metadata=[("x-big", "a" * 40000)]
            )
            out = {"ok": True}
        except grpc.RpcError as e:
            out = failure(e)
    else:
        raise SystemExit("unknown scenario " + scenario)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
