#!/usr/bin/env python3
"""Half-message benchmark (docs/half-messages.md), one pika producer.

1. Throughput with publisher confirms, each publish waiting for its confirm (one producer,
   one channel, persistent 1 KiB messages to a durable queue):
   - plain: one confirmed persistent publish per message (the peer);
   - half + commit: a confirmed half publish (x-transaction-id) then a confirmed commit
     (amq.ferrymq.transactions) per transaction.
   Both in the same run, alternating rounds, so they see the same disk and load.
2. Memory per pending half: N halves of 1 KiB published (unconfirmed stream, then one
   confirmed publish proves all stored), broker RSS (from /proc/<pid>) before and after,
   and messages_half from the management API.

    python3 bench/half-messages.py --url amqp://... --http http://127.0.0.1:P --pid PID
"""

from __future__ import annotations

import argparse
import base64
import json
import time
import urllib.request

import pika

QUEUE = "bench.half.q"
TXN = "amq.ferrymq.transactions"


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def messages_half(http):
    req = urllib.request.Request(f"{http}/api/vhosts/%2F")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    return json.load(urllib.request.urlopen(req, timeout=10))["messages_half"]


def plain_round(ch, n, body, props):
    t = time.perf_counter()
    for _ in range(n):
        ch.basic_publish("", QUEUE, body, props)
    return time.perf_counter() - t


def half_round(ch, n, body, prefix):
    decide = pika.BasicProperties(delivery_mode=2,
                                  headers={"x-transaction-action": "commit"})
    t = time.perf_counter()
    for i in range(n):
        tid = f"{prefix}.{i}"
        ch.basic_publish("", QUEUE, body,
                         pika.BasicProperties(delivery_mode=2,
                                              headers={"x-transaction-id": tid}))
        ch.basic_publish(TXN, tid, b"", decide)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--txns", type=int, default=2000, help="per mode, over --rounds")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--pending", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1024)
    a = ap.parse_args()
    body = b"x" * a.size

    c = pika.BlockingConnection(pika.URLParameters(a.url))
    ch = c.channel()
    ch.queue_declare(QUEUE, durable=True)
    purge = c.channel()
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2)
    per = a.txns // a.rounds
    plain_t = half_t = 0.0
    for r in range(a.rounds):
        plain_t += plain_round(ch, per, body, props)
        half_t += half_round(ch, per, body, f"r{r}")
        purge.queue_purge(QUEUE)
    n = per * a.rounds
    print("== throughput, 1 producer, each publish waits for its confirm, "
          f"{a.size} B persistent bodies, durable queue")
    print(f"plain persistent publish    {n:,} msgs in {plain_t:.2f} s = {n / plain_t:,.0f} msg/s")
    print(f"half publish + commit       {n:,} txns in {half_t:.2f} s = {n / half_t:,.0f} commits/s "
          f"({2 * n / half_t:,.0f} confirmed publishes/s)")
    print(f"ratio                       commits/s = {plain_t / half_t * 100:.0f}% of plain msgs/s")

    # Memory per pending half.
    time.sleep(1)
    before = rss_kb(a.pid)
    base = messages_half(a.http)
    raw = c.channel()  # no confirms: a stream, then one confirmed publish
    t = time.perf_counter()
    hp = lambda i: pika.BasicProperties(delivery_mode=2,
                                        headers={"x-transaction-id": f"p.{i}"})
    for i in range(a.pending):
        raw.basic_publish("", QUEUE, body, hp(i))
    ch.basic_publish("", QUEUE, body, hp(a.pending))
    dt = time.perf_counter() - t
    deadline = time.time() + 120
    while messages_half(a.http) < base + a.pending + 1 and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    after = rss_kb(a.pid)
    pending = messages_half(a.http) - base
    print(f"== memory, {pending:,} pending halves of {a.size} B "
          f"(published unconfirmed in {dt:.1f} s = {pending / dt:,.0f}/s, last one confirmed)")
    print(f"broker RSS                  before {before / 1024:.1f} MiB, after {after / 1024:.1f} MiB")
    print(f"RSS per pending half        {(after - before) * 1024 / max(pending, 1):.0f} bytes "
          f"(body {a.size} B stays on disk)")
    c.close()


if __name__ == "__main__":
    main()
