#!/usr/bin/env python3
"""Opens many idle AMQP 0-9-1 connections (plain or TLS) and keeps them open.

Usage: idle_connections.py HOST PORT COUNT [--tls --ca-file PEM] [--user U --password P]
                           [--vhost V] [--concurrency N] [--hold-file PATH]

Each connection completes the whole handshake by hand (protocol header, connection.start,
start-ok with PLAIN, tune-ok with heartbeat 0, connection.open, open-ok), then stays idle.
No third-party modules: asyncio and ssl only. When all COUNT are open it prints
`open COUNT connections in S s` and one JSON line, then waits until PATH (--hold-file)
disappears or stdin closes, and exits: closing every socket, or with --graceful sending
connection.close and waiting for close-ok first. Needs `ulimit -n` above COUNT + 100.
"""
import argparse
import asyncio
import json
import os
import ssl
import struct
import sys
import time

FRAME_END = b"\xce"


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + FRAME_END


def shortstr(s):
    b = s.encode()
    return struct.pack(">B", len(b)) + b


def longstr(b):
    return struct.pack(">I", len(b)) + b


def method(class_id, method_id, args=b""):
    return frame(1, 0, struct.pack(">HH", class_id, method_id) + args)


async def read_method(reader):
    """Reads frames until a method frame on channel 0; returns (class, method, args)."""
    while True:
        head = await reader.readexactly(7)
        kind, channel, size = struct.unpack(">BHI", head)
        payload = await reader.readexactly(size + 1)
        if payload[-1:] != FRAME_END:
            raise RuntimeError("bad frame end")
        if kind == 1:
            cls, meth = struct.unpack(">HH", payload[:4])
            return cls, meth, payload[4:-1]


async def open_one(host, port, ctx, user, password, vhost):
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ctx, server_hostname=host if ctx else None
    )
    writer.write(b"AMQP\x00\x00\x09\x01")
    cls, meth, _ = await read_method(reader)
    if (cls, meth) != (10, 10):
        raise RuntimeError(f"expected connection.start, got {cls}.{meth}")
    response = b"\x00" + user.encode() + b"\x00" + password.encode()
    # client-properties (empty table), mechanism, response, locale
    writer.write(method(10, 11, struct.pack(">I", 0) + shortstr("PLAIN") + longstr(response) + shortstr("en_US")))
    cls, meth, args = await read_method(reader)
    if (cls, meth) == (10, 50):
        code = struct.unpack(">H", args[:2])[0]
        text = args[3 : 3 + args[2]].decode(errors="replace")
        raise RuntimeError(f"connection refused: {code} {text}")
    if (cls, meth) != (10, 30):
        raise RuntimeError(f"expected connection.tune, got {cls}.{meth}")
    channel_max, frame_max, _heartbeat = struct.unpack(">HIH", args[:8])
    writer.write(method(10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
    writer.write(method(10, 40, shortstr(vhost) + shortstr("") + b"\x00"))
    await writer.drain()
    cls, meth, args = await read_method(reader)
    if (cls, meth) != (10, 41):
        raise RuntimeError(f"expected connection.open-ok, got {cls}.{meth}")
    return reader, writer


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--ca-file")
    ap.add_argument("--user", default="guest")
    ap.add_argument("--password", default="guest")
    ap.add_argument("--vhost", default="/")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--hold-file")
    ap.add_argument("--graceful", action="store_true",
                    help="end with connection.close / close-ok instead of just closing the socket")
    a = ap.parse_args()
    ctx = None
    if a.tls:
        ctx = ssl.create_default_context(cafile=a.ca_file)
    conns = []
    sem = asyncio.Semaphore(a.concurrency)
    started = time.monotonic()
    failures = []

    async def one():
        async with sem:
            try:
                conns.append(await open_one(a.host, a.port, ctx, a.user, a.password, a.vhost))
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(repr(e))

    await asyncio.gather(*(one() for _ in range(a.count)))
    secs = time.monotonic() - started
    print(f"open {len(conns)} connections in {secs:.1f} s ({len(failures)} failed)", file=sys.stderr)
    if failures:
        print(f"first failure: {failures[0]}", file=sys.stderr)
    print(json.dumps({"open": len(conns), "failed": len(failures), "seconds": round(secs, 2)}), flush=True)
    # Hold the connections until told to stop.
    if a.hold_file:
        while os.path.exists(a.hold_file):
            await asyncio.sleep(0.2)
    else:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    if a.graceful:
        async def close_one(r, w):
            async with sem:
                try:
                    w.write(method(10, 50, struct.pack(">H", 200) + shortstr("bye") + struct.pack(">HH", 0, 0)))
                    await w.drain()
                    await asyncio.wait_for(read_method(r), 10)
                except Exception:  # noqa: BLE001 - closing anyway
                    pass
                w.close()
        await asyncio.gather(*(close_one(r, w) for r, w in conns))
    else:
        for _, w in conns:
            w.close()
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
