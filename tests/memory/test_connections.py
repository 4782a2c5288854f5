"""Many connections, and the connection and consumer caps with RabbitMQ's errors."""

from __future__ import annotations

import resource
import selectors
import time

import pika
import pika.exceptions
import pytest

from conftest import (RssSampler, handshake_bytes, node, params, publish_frames, read_frames,
                      rss, wait_until)

# Thousands of clients on raw sockets: every one does the handshake and publishes a 1 KiB
# message at once; the broker's RSS must stay bounded (idle connections hold no
# read or write buffer).
CONNECTIONS = 2000
PER_CONNECTION_BUDGET = 48 * 1024


def open_many(b, n: int, publish: bytes):
    socks = []
    sel = selectors.DefaultSelector()
    import socket as _s
    for _ in range(n):
        s = _s.create_connection((b.host, b.port), timeout=10)
        s.sendall(handshake_bytes() + publish)
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, bytearray())
    opened = 0
    deadline = time.monotonic() + 60
    done = set()
    while opened < n and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            s, buf = key.fileobj, key.data
            chunk = s.recv(65536)
            assert chunk, "connection closed by the broker"
            buf += chunk
            for ch, m in read_frames(buf):
                assert not isinstance(m, pika.spec.Connection.Close), (m.reply_code, m.reply_text)
                if ch == 1 and isinstance(m, pika.spec.Channel.OpenOk) and s not in done:
                    done.add(s)
                    opened += 1
    sel.close()
    assert opened == n, f"{opened} of {n} connections opened"
    return socks


def test_many_connections_publishing_at_once(brokers):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = CONNECTIONS
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 500), hard))
    b = brokers("--memory-high-watermark", "300MB")
    c = pika.BlockingConnection(params(b))
    c.channel().queue_declare("many")
    c.close()
    time.sleep(0.5)
    base = rss(b.proc.pid)
    sampler = RssSampler(b.proc.pid)
    body = b"m" * 1024
    socks = open_many(b, n, publish_frames(1, "", "many", body))
    try:
        c = pika.BlockingConnection(params(b))
        ch = c.channel()
        wait_until(lambda: ch.queue_declare("many", passive=True).method.message_count == n,
                   timeout=30, what=f"{n} messages in the queue")
        c.close()
        time.sleep(1.5)  # idle connections give their buffers back within a second
        settled = rss(b.proc.pid)
        peak = sampler.stop()
        per_conn = (settled - base) / n
        print(f"\n{n} connections: RSS {base / 1e6:.1f} MB -> peak {peak / 1e6:.1f} MB, "
              f"settled {settled / 1e6:.1f} MB ({per_conn / 1024:.1f} KiB per connection)")
        assert per_conn < PER_CONNECTION_BUDGET, f"{per_conn:.0f} bytes per connection"
        assert peak < 300_000_000
        assert node(b)["mem_alarm"] is False
    finally:
        for s in socks:
            s.close()


def test_connection_max_refuses_with_530(brokers):
    b = brokers("--connection-max", "3")
    conns = [pika.BlockingConnection(params(b)) for _ in range(3)]
    # Refused at connection.open: pika reports the broker's close as a probable access
    # denial.
    with pytest.raises(pika.exceptions.AMQPConnectionError) as e:
        pika.BlockingConnection(params(b))
    assert "(530)" in str(e.value)
    assert "NOT_ALLOWED - connection refused: node connection limit (3) is reached" in str(e.value)
    # Closing one makes room again.
    conns.pop().close()
    deadline = time.monotonic() + 10
    while True:
        try:
            conns.append(pika.BlockingConnection(params(b)))
            break
        except pika.exceptions.AMQPConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    for c in conns:
        c.close()


def test_consumer_max_per_channel_closes_with_530(brokers):
    b = brokers("--consumer-max-per-channel", "2")
    c = pika.BlockingConnection(params(b))
    ch = c.channel()
    ch.queue_declare("cq")
    ch.basic_consume("cq", lambda *a: None, consumer_tag="a")
    ch.basic_consume("cq", lambda *a: None, consumer_tag="b")
    # Another channel has its own count.
    ch2 = c.channel()
    ch2.basic_consume("cq", lambda *a: None, consumer_tag="c")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        ch.basic_consume("cq", lambda *a: None, consumer_tag="d")
    assert e.value.reply_code == 530
    assert "reached maximum (2) of consumers per channel" in e.value.reply_text
