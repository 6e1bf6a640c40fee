"""WebSocket ends for the gate's tests, on Python's `websockets` (an
implementation nobody here wrote).

ws.py server
    echo server on 127.0.0.1:0; prints "PORT n". Its first message on each
    connection is the upgrade request's identity fields as JSON; then it
    echoes every message.
ws.py client PORT ROOT CERT KEY [QUIET_SECONDS]
    connects to wss://localhost:PORT/ws with a client certificate, reads
    the identity message, echoes a text and a 1 MiB binary message, then
    (with QUIET_SECONDS) stays quiet that long and reports whether the
    connection is still open. Prints one JSON object.
ws.py hold PORT ROOT CERT KEY
    connects as above, prints "EVENT open", then for each line "send TEXT"
    on stdin sends TEXT and prints "EVENT echo TEXT"; prints "EVENT closed"
    as soon as the connection closes (whoever closes it)."""

import asyncio
import json
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def handler(ws):
    h = ws.request.headers
    await ws.send(
        json.dumps(
            {
                "spiffe_id": h.get("x-ward-spiffe-id"),
                "xfcc": h.get("x-forwarded-client-cert"),
                "path": ws.request.path,
            }
        )
    )
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def server():
    async with serve(handler, "127.0.0.1", 0, max_size=4 << 20) as s:
        port = s.sockets[0].getsockname()[1]
        print("PORT %d" % port, flush=True)
        await asyncio.Future()


async def client(port, root, cert, key, quiet):
    ctx = ssl.create_default_context(cafile=root)
    ctx.load_cert_chain(cert, key)
    out = {}
    async with connect(
        "wss://localhost:%s/ws" % port, ssl=ctx, max_size=4 << 20, open_timeout=10
    ) as ws:
        out["identity"] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await ws.send("hello")
        out["text"] = await asyncio.wait_for(ws.recv(), 10)
        blob = bytes(range(256)) * 4096
        await ws.send(blob)
        back = await asyncio.wait_for(ws.recv(), 10)
        out["binary_same"] = back == blob
        if quiet:
            await asyncio.sleep(quiet)
            try:
                await ws.send("after quiet")
                out["after_quiet"] = await asyncio.wait_for(ws.recv(), 5)
            except (ConnectionClosed, asyncio.TimeoutError) as e:
                out["after_quiet"] = "closed: " + type(e).__name__
    print(json.dumps(out))


async def hold(port, root, cert, key):
    ctx = ssl.create_default_context(cafile=root)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    async with connect(
        "wss://localhost:%s/ws" % port, ssl=ctx, open_timeout=10
    ) as ws:
        await asyncio.wait_for(ws.recv(), 10)
        print("EVENT open", flush=True)
        replies = asyncio.Queue()

        async def reader():
            try:
                async for message in ws:
                    await replies.put(message)
            except ConnectionClosed:
                pass
            print("EVENT closed", flush=True)

        reading = asyncio.ensure_future(reader())
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or reading.done():
                break
            text = line.strip().removeprefix("send ")
            try:
                await ws.send(text)
                got = await asyncio.wait_for(replies.get(), 10)
                print("EVENT echo %s" % got, flush=True)
            except (ConnectionClosed, asyncio.TimeoutError) as e:
                print("EVENT failed %s" % type(e).__name__, flush=True)
        await reading


def main():
    if sys.argv[1] == "server":
        asyncio.run(server())
    elif sys.argv[1] == "hold":
        asyncio.run(hold(*sys.argv[2:6]))
    else:
        port, root, cert, key = sys.argv[2:6]
        quiet = float(sys.argv[6]) if len(sys.argv) > 6 else 0
        asyncio.run(client(port, root, cert, key, quiet))


if __name__ == "__main__":
    main()
