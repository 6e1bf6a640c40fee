"""A gRPC upstream for the gate's tests, on Python's grpcio (an
implementation nobody here wrote). Service ward.test.Echo with raw-bytes
messages (no generated code), plus grpc.health.v1.Health. Listens on
127.0.0.1 (port 0 unless argv[1] names one), prints "PORT n" when serving,
and "EVENT ..." lines for what the tests await (a cancelled call).
With argv "0 CERT KEY CA": TLS, requiring a client certificate from CA;
the message "peer" is answered with the client certificate's SANs."""

import json
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "ward.test.Echo"
BIG = 64 << 20


def metadata(context):
    return {k: v for k, v in context.invocation_metadata()}


def unary(request, context):
    if request == b"whoami":
        m = metadata(context)
        return json.dumps(
            {
                "spiffe_id": m.get("x-ward-spiffe-id"),
                "xfcc": m.get("x-forwarded-client-cert"),
                "keys": sorted(m.keys()),
            }
        ).encode()
    if request.startswith(b"sleep:"):
        time.sleep(float(request[6:]))
        return b"slept"
    if request == b"deadline":
        return json.dumps({"remaining": context.time_remaining()}).encode()
    if request == b"peer":
        auth = context.auth_context()
        return json.dumps(
            {k: [v.decode("utf-8", "replace") for v in vs] for k, vs in auth.items()}
        ).encode()
    if request == b"fail":
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "asked to fail")
    return request


def server_stream(request, context):
    for i in range(int(request)):
        yield b"%d" % i


def client_stream(requests, context):
    count = total = 0
    for m in requests:
        count += 1
        total += len(m)
    return b"%d:%d" % (count, total)


def bidi(requests, context):
    for m in requests:
        yield m


def hold(request, context):
    """Streams one message, then holds the call open until it ends."""
    ended = threading.Event()

    def on_end():
        print("EVENT ended %s" % request.decode(), flush=True)
        ended.set()

    context.add_callback(on_end)
    yield b"started"
    ended.wait(30)


def main():
    handlers = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Secret": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Hold": grpc.unary_stream_rpc_method_handler(hold),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        options=[
            ("grpc.max_receive_message_length", BIG),
            ("grpc.max_send_message_length", BIG),
        ],
    )
    server.add_generic_rpc_handlers((handlers,))
    status = health.HealthServicer()
    status.set("", health_pb2.HealthCheckResponse.SERVING)
    status.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(status, server)
    want = sys.argv[1] if len(sys.argv) > 1 else "0"
    if len(sys.argv) > 4:
        cert, key, ca = (open(p, "rb").read() for p in sys.argv[2:5])
        creds = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )
        port = server.add_secure_port("127.0.0.1:" + want, creds)
    else:
        port = server.add_insecure_port("127.0.0.1:" + want)
    server.start()
    print("PORT %d" % port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
