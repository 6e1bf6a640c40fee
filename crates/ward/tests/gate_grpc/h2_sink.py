"""An HTTP/2 upstream (prior knowledge, Python's `h2`) that takes a request
and never reads its body: it acknowledges no DATA, so its flow-control
windows stay closed once the first 64 KiB have arrived. What a client
uploads faster than this upstream reads must be held back by the gate,
not buffered there.

Prints "PORT n", then "EVENT headers" when a request arrives, then
"RECEIVED n" (body bytes so far) after each DATA frame."""

import socket

import h2.config
import h2.connection
import h2.events


def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    print("PORT", listener.getsockname()[1], flush=True)
    sock, _ = listener.accept()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    received = 0
    while True:
        data = sock.recv(65535)
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                print("EVENT headers", flush=True)
            elif isinstance(event, h2.events.DataReceived):
                received += len(event.data)
                print("RECEIVED", received, flush=True)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)


if __name__ == "__main__":
    main()
