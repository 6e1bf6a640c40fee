"""An HTTP/2 upstream (Python `h2`, prior knowledge) that answers every
request with response headers and one gRPC message, then, once the client
has sent its second message (so it has read the first answer), resets the
stream (RST_STREAM CANCEL): the reverse direction of a cancelled call.
Listens on 127.0.0.1:0, prints "PORT n", and "EVENT reset" after each
reset.

With argument "stall": answers nothing (prints "EVENT request"); with
"stall-body": response headers and one message, then nothing. Either way
it prints "EVENT reset-by-peer" when the gate resets the stream. It
enforces no grpc-timeout: only the gate can end such a call."""

import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events

# A gRPC message of one byte: 5 bytes of framing and the byte.
MESSAGE = 6


def serve(sock):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    received = {}
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    while True:
        data = sock.recv(65535)
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.StreamReset):
                print("EVENT reset-by-peer", flush=True)
            elif isinstance(event, h2.events.RequestReceived) and MODE == "stall":
                print("EVENT request", flush=True)
            elif isinstance(event, h2.events.RequestReceived) and MODE == "stall-body":
                sid = event.stream_id
                conn.send_headers(
                    sid, [(":status", "200"), ("content-type", "application/grpc")]
                )
                conn.send_data(sid, b"\x00\x00\x00\x00\x07started")
                print("EVENT request", flush=True)
            elif isinstance(event, h2.events.RequestReceived):
                sid = event.stream_id
                conn.send_headers(
                    sid, [(":status", "200"), ("content-type", "application/grpc")]
                )
                conn.send_data(sid, b"\x00\x00\x00\x00\x07started")
                received[sid] = 0
            elif isinstance(event, h2.events.DataReceived):
                sid = event.stream_id
                conn.acknowledge_received_data(event.flow_controlled_length, sid)
                if sid not in received:
                    continue
                received[sid] += len(event.data)
                if received[sid] >= 2 * MESSAGE:
                    del received[sid]
                    conn.reset_stream(sid, error_code=8)
                    sock.sendall(conn.data_to_send())
                    print("EVENT reset", flush=True)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)


MODE = sys.argv[1] if len(sys.argv) > 1 else "reset"


def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    print("PORT %d" % listener.getsockname()[1], flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
