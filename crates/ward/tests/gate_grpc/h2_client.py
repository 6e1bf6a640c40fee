"""A raw HTTP/2 client for the gate's tests, on Python's `h2` (an
implementation nobody here wrote) over `ssl` with a client certificate.
Unlike grpcio it enforces no deadline itself, so what it sees of an
expired `grpc-timeout` is what the gate did.

usage: h2_client.py PORT ROOT CERT KEY grpc PATH PAYLOAD TIMEOUT
    one unary gRPC call (TIMEOUT: a grpc-timeout value, or "-" for none);
    prints JSON: status, headers, trailers, messages, elapsed, reset.
usage: h2_client.py PORT ROOT CERT KEY grpc-held PATH PAYLOAD
    the same call, but the request body is held back until the gate has
    answered: what a client still uploading sees of a refusal (the gate
    must answer, not reset the stream); prints the same JSON.
usage: h2_client.py PORT ROOT CERT KEY websocket PATH [ACTIVE QUIET]
    RFC 8441 extended CONNECT (:protocol websocket) on a gate that
    advertises SETTINGS_ENABLE_CONNECT_PROTOCOL, then one masked WebSocket
    text frame "hello" and its echo; prints JSON: settings, status,
    frames (text of each server frame). With ACTIVE and QUIET (seconds):
    then an echoed text every 0.3 s for ACTIVE seconds (echoes, or
    ended_while_active), then nothing, waiting up to QUIET seconds for the
    gate to end the stream: after_quiet (StreamEnded, StreamReset,
    ConnectionTerminated, connection closed, or open), quiet_elapsed.
usage: h2_client.py PORT ROOT CERT KEY download PATH STALL_BYTES
    GET PATH; after STALL_BYTES of the body prints "EVENT stalled" and
    reads nothing (no socket reads, no WINDOW_UPDATE) until a line on
    stdin, then reads the rest; prints JSON: status, total."""

import json
import os
import socket
import ssl
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


def connect(port, root, cert, key):
    ctx = ssl.create_default_context(cafile=root)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=20)
    tls = ctx.wrap_socket(sock, server_hostname="localhost")
    assert tls.selected_alpn_protocol() == "h2", tls.selected_alpn_protocol()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    tls.sendall(conn.data_to_send())
    return tls, conn


def pump(tls, conn):
    data = tls.recv(65535)
    if not data:
        raise EOFError("the gate closed the connection")
    events = conn.receive_data(data)
    out = conn.data_to_send()
    if out:
        tls.sendall(out)
    return events


def grpc(port, root, cert, key, path, payload, timeout, held=False):
    tls, conn = connect(port, root, cert, key)
    sid = conn.get_next_available_stream_id()
    headers = [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", path),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    if timeout != "-":
        headers.append(("grpc-timeout", timeout))
    body = payload.encode()
    conn.send_headers(sid, headers)
    if not held:
        conn.send_data(sid, b"\x00" + struct.pack(">I", len(body)) + body, end_stream=True)
    tls.sendall(conn.data_to_send())
    start = time.monotonic()
    out = {"headers": {}, "trailers": {}, "data": b"", "reset": None}
    done = False
    while not done:
        for event in pump(tls, conn):
            if isinstance(event, h2.events.ResponseReceived):
                out["headers"] = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h2.events.DataReceived):
                out["data"] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.TrailersReceived):
                out["trailers"] = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h2.events.StreamEnded):
                done = True
            elif isinstance(event, h2.events.StreamReset):
                out["reset"] = event.error_code
                done = True
        pending = conn.data_to_send()
        if pending:
            tls.sendall(pending)
    out["elapsed"] = time.monotonic() - start
    out["data"] = len(out["data"])
    status = out["trailers"].get("grpc-status") or out["headers"].get("grpc-status")
    out["grpc_status"] = status
    out["grpc_message"] = out["trailers"].get("grpc-message") or out["headers"].get(
        "grpc-message"
    )
    return out


def ws_frame(text):
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def ws_frames(buf):
    """Unmasked server frames in buf: (texts, rest)."""
    texts = []
    while len(buf) >= 2:
        n = buf[1] & 0x7F
        at = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = struct.unpack(">H", buf[2:4])[0]
            at = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = struct.unpack(">Q", buf[2:10])[0]
            at = 10
        if len(buf) < at + n:
            break
        texts.append(buf[at : at + n].decode("utf-8", "replace"))
        buf = buf[at + n :]
    return texts, buf


def websocket(port, root, cert, key, path, active=None, quiet=None):
    tls, conn = connect(port, root, cert, key)
    out = {"settings": None, "status": None, "frames": []}
    # The server's SETTINGS tell whether extended CONNECT is allowed.
    while out["settings"] is None:
        for event in pump(tls, conn):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                s = event.changed_settings.get(
                    h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL
                )
                out["settings"] = s.new_value if s else 0
    if not out["settings"]:
        return out
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", path),
            ("sec-websocket-version", "13"),
        ],
    )
    tls.sendall(conn.data_to_send())
    buf = b""
    sent = False
    while len(out["frames"]) < 2:
        for event in pump(tls, conn):
            if isinstance(event, h2.events.ResponseReceived):
                out["status"] = dict(event.headers).get(b":status", b"").decode()
                if out["status"] != "200":
                    return out
            elif isinstance(event, h2.events.DataReceived):
                buf += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, sid)
                texts, buf = ws_frames(buf)
                out["frames"].extend(texts)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                out["ended"] = type(event).__name__
                return out
        # The upstream speaks first (the identity message); then one text.
        if out["frames"] and not sent:
            conn.send_data(sid, ws_frame("hello"))
            sent = True
        pending = conn.data_to_send()
        if pending:
            tls.sendall(pending)
    if active is not None:
        # Traffic in the tunnel for ACTIVE seconds, one echoed text every
        # 0.3 s: the idle timeout must not end a tunnel that is in use.
        out["echoes"] = 0
        end = time.monotonic() + float(active)
        tls.settimeout(5)
        while time.monotonic() < end:
            time.sleep(0.3)
            conn.send_data(sid, ws_frame("tick"))
            tls.sendall(conn.data_to_send())
            got = False
            while not got:
                try:
                    events = pump(tls, conn)
                except h2.exceptions.ProtocolError:
                    if conn.state_machine.state != h2.connection.ConnectionState.CLOSED:
                        raise
                    out["ended_while_active"] = "ConnectionTerminated"
                    return out
                for event in events:
                    if isinstance(event, h2.events.DataReceived):
                        buf += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, sid)
                        texts, buf = ws_frames(buf)
                        got = got or "tick" in texts
                    elif isinstance(
                        event,
                        (h2.events.StreamEnded, h2.events.StreamReset, h2.events.ConnectionTerminated),
                    ):
                        out["ended_while_active"] = type(event).__name__
                        return out
                pending = conn.data_to_send()
                if pending:
                    tls.sendall(pending)
            out["echoes"] += 1
    if quiet is not None:
        # Send nothing more; the gate should end the tunnel's stream (or the
        # connection, GOAWAY) once it has been idle for its timeout. Waits at
        # most QUIET seconds.
        start = time.monotonic()
        tls.settimeout(float(quiet))
        out["after_quiet"] = "open"
        try:
            while out["after_quiet"] == "open" and time.monotonic() - start < float(quiet):
                for event in pump(tls, conn):
                    if isinstance(
                        event,
                        (h2.events.StreamEnded, h2.events.StreamReset, h2.events.ConnectionTerminated),
                    ):
                        out["after_quiet"] = type(event).__name__
                pending = conn.data_to_send()
                if pending:
                    tls.sendall(pending)
        except h2.exceptions.ProtocolError:
            # A frame after GOAWAY (hyper pings once while closing) in the
            # same read: the connection is closed all the same.
            if conn.state_machine.state != h2.connection.ConnectionState.CLOSED:
                raise
            out["after_quiet"] = "ConnectionTerminated"
        except (socket.timeout, EOFError) as e:
            out["after_quiet"] = "open" if isinstance(e, socket.timeout) else "connection closed"
        out["quiet_elapsed"] = time.monotonic() - start
    return out


def download(port, root, cert, key, path, stall):
    tls, conn = connect(port, root, cert, key)
    window = 4 << 20
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    conn.increment_flow_control_window(window)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", path),
        ],
        end_stream=True,
    )
    tls.sendall(conn.data_to_send())
    out = {"status": None, "total": 0}
    stalled = False
    done = False
    while not done:
        for event in pump(tls, conn):
            if isinstance(event, h2.events.ResponseReceived):
                out["status"] = dict(event.headers).get(b":status", b"").decode()
            elif isinstance(event, h2.events.DataReceived):
                out["total"] += len(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                out["end"] = type(event).__name__
                done = True
        pending = conn.data_to_send()
        if pending:
            tls.sendall(pending)
        if not stalled and out["total"] >= stall:
            stalled = True
            print("EVENT stalled", flush=True)
            sys.stdin.readline()
    return out


def main():
    port, root, cert, key, scenario = sys.argv[1:6]
    if scenario == "grpc":
        out = grpc(port, root, cert, key, *sys.argv[6:9])
    elif scenario == "grpc-held":
        out = grpc(port, root, cert, key, sys.argv[6], sys.argv[7], "-", held=True)
    elif scenario == "download":
        out = download(port, root, cert, key, sys.argv[6], int(sys.argv[7]))
    elif scenario == "websocket":
        out = websocket(port, root, cert, key, *sys.argv[6:9])
    else:
        raise SystemExit("unknown scenario " + scenario)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
