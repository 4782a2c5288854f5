"""A consumer that stops reading its socket cannot grow the broker: with no prefetch limit,
deliveries to its connection stop once its write buffer is full; other connections are
served meanwhile, and when it goes away every message is still in the queue."""

from __future__ import annotations

import socket
import time

import pika

from conftest import RssSampler, expect_open, handshake_bytes, method_frame, params, rss

MESSAGES = 60_000
BODY = 1024


def test_slow_consumer_is_bounded(brokers):
    b = brokers("--memory-high-watermark", "300MB")
    c = pika.BlockingConnection(params(b))
    ch = c.channel()
    ch.queue_declare("slow")
    ch.queue_declare("other")
    c.close()

    # The slow consumer: a raw socket that consumes with no prefetch limit, then never
    # reads again; a small receive buffer so the kernel holds little for it.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    s.connect((b.host, b.port))
    s.sendall(handshake_bytes())
    expect_open(s)
    s.sendall(method_frame(1, pika.spec.Basic.Consume(queue="slow", consumer_tag="slow",
                                                     no_ack=False)))
    time.sleep(0.2)
    base = rss(b.proc.pid)
    sampler = RssSampler(b.proc.pid)

    pub = pika.BlockingConnection(params(b))
    pch = pub.channel()
    body = b"s" * BODY
    t0 = time.monotonic()
    for i in range(MESSAGES):
        pch.basic_publish("", "slow", body)
    # A confirmed publish after the others: the broker has taken them all.
    pch.confirm_delivery()
    pch.basic_publish("", "other", b"sync")
    publish_s = time.monotonic() - t0

    # Another connection works normally meanwhile.
    other = pika.BlockingConnection(params(b))
    och = other.channel()
    for i in range(100):
        pch.basic_publish("", "other", str(i).encode())
    got = []
    sync = och.basic_get("other", auto_ack=True)
    assert sync[2] == b"sync"
    for method, _p, body_ in och.consume("other", inactivity_timeout=5):
        if method is None:
            break
        got.append(body_)
        och.basic_ack(method.delivery_tag)
        if len(got) == 100:
            break
    och.cancel()
    assert got == [str(i).encode() for i in range(100)]
    peak = sampler.stop()
    grew = peak - base
    print(f"\nslow consumer: {MESSAGES} x {BODY} B published in {publish_s:.1f}s, "
          f"RSS grew {grew / 1e6:.1f} MB (the queue's {MESSAGES * BODY / 1e6:.0f} MB of "
          f"messages included)")
    # The messages themselves (about 60 MB) plus bounded buffers: the slow connection's
    # write buffer (4 MiB) and its delivery backlog, not a copy per delivery.
    assert grew < 2 * MESSAGES * BODY + 16 * 1024 * 1024

    # The slow consumer goes away: its unacknowledged deliveries return to the queue.
    s.close()
    deadline = time.monotonic() + 20
    while True:
        n = och.queue_declare("slow", passive=True).method.message_count
        if n == MESSAGES or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert n == MESSAGES
    other.close()
    pub.close()
