#!/usr/bin/env python3
"""Delayed-message benchmark: N persistent messages (default 1 000 000) published to a
durable x-delayed-message exchange with delays spread uniformly over S seconds (default
60), consumed from the bound queue. Reports the publish rate while messages are pending,
the broker's peak RSS (from /proc, when --pid is given), and the lateness percentiles of
delivery (arrival minus due time, measured on one machine's clock).

    python3 bench/delayed.py --url amqp://guest:guest@127.0.0.1:5672/%2f --pid <broker pid>

Publishing uses several pika processes (without confirms; one confirmed publish at the
end of each proves everything was taken); the consumer runs in its own process.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import struct
import time

import pika

EXCHANGE, QUEUE = "bench.delayed", "bench.delayed.q"


def setup(url):
    c = pika.BlockingConnection(pika.URLParameters(url))
    ch = c.channel()
    ch.exchange_delete(EXCHANGE)
    ch.queue_delete(QUEUE)
    ch.exchange_declare(EXCHANGE, "x-delayed-message", durable=True,
                        arguments={"x-delayed-type": "direct"})
    ch.queue_declare(QUEUE, durable=True)
    ch.queue_bind(QUEUE, EXCHANGE, "k")
    c.close()


def publisher(url, n, spread_ms, seed, out):
    rnd = random.Random(seed)
    c = pika.BlockingConnection(pika.URLParameters(url))
    ch = c.channel()
    start = time.time()
    for _ in range(n):
        d = rnd.randint(1, spread_ms)
        due = time.time() + d / 1000
        ch.basic_publish(EXCHANGE, "k", struct.pack(">d", due) + b"x" * 8,
                         pika.BasicProperties(delivery_mode=2, headers={"x-delay": d}))
    ch.confirm_delivery()
    ch.basic_publish(EXCHANGE, "k", struct.pack(">d", time.time()) + b"x" * 8,
                     pika.BasicProperties(delivery_mode=2))
    out.put((n + 1, time.time() - start))
    c.close()


def consumer(url, total, out):
    c = pika.BlockingConnection(pika.URLParameters(url))
    ch = c.channel()
    ch.basic_qos(prefetch_count=2000)
    late = []

    def on(chan, method, props, body):
        late.append(time.time() - struct.unpack(">d", body[:8])[0])
        if len(late) % 1000 == 0 or len(late) >= total:
            chan.basic_ack(method.delivery_tag, multiple=True)
        if len(late) >= total:
            chan.stop_consuming()

    ch.basic_consume(QUEUE, on)
    ch.start_consuming()
    out.put(late)
    c.close()


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--spread", type=float, default=60.0, help="seconds")
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--pid", type=int, help="broker pid for RSS")
    a = ap.parse_args()
    setup(a.url)
    out = mp.Queue()
    per = a.messages // a.publishers
    total = per * a.publishers + a.publishers
    cons = mp.Process(target=consumer, args=(a.url, total, out))
    cons.start()
    rss0 = rss_kb(a.pid) if a.pid else None
    t0 = time.time()
    pubs = [mp.Process(target=publisher, args=(a.url, per, int(a.spread * 1000), i, out))
            for i in range(a.publishers)]
    for p in pubs:
        p.start()
    peak = rss0 or 0
    done, results = 0, []
    late = None
    while late is None:
        try:
            r = out.get(timeout=0.5)
            if isinstance(r, list):
                late = r
            else:
                results.append(r)
                if len(results) == a.publishers:
                    pub_secs = time.time() - t0
        except Exception:
            pass
        if a.pid:
            peak = max(peak, rss_kb(a.pid) or 0)
    for p in pubs:
        p.join()
    cons.join()
    late.sort()
    pct = lambda q: late[min(len(late) - 1, int(len(late) * q))] * 1000
    print(f"messages           {total}")
    print(f"publish rate       {total / pub_secs:,.0f} msg/s ({pub_secs:.1f} s, {a.publishers} pika publishers)")
    if a.pid:
        print(f"broker RSS         start {rss0 / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB")
    print(f"lateness ms        p50 {pct(0.5):.1f}  p99 {pct(0.99):.1f}  p99.9 {pct(0.999):.1f}  max {late[-1] * 1000:.1f}  min {late[0] * 1000:.1f}")


if __name__ == "__main__":
    main()
