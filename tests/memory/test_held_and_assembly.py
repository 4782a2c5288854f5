"""Memory held outside queue heads (issue 10 leftovers).

- Unacked deliveries count against the queue memory budget: with a 4 MiB budget, a 3 MB
  backlog of 1 KiB transient messages stays in memory on its own (under the fair share),
  but once a consumer holds 3 MB of unacked deliveries on another queue the same backlog
  pages to its scratch log.
- The per-connection cap on bytes in multi-frame assembly (`--max-assembly-bytes`): content
  headers declaring large bodies on several channels of one connection, bodies never sent;
  the one that would take the connection over the cap gets channel.close 406, a smaller one
  that fits is accepted.
"""

from __future__ import annotations

import struct
import time

import pika
import pika.spec

from conftest import method_frame, params, raw_connect, expect_open, read_frames, wait_until


def scratch_files(data_dir) -> int:
    root = data_dir / "scratch"
    if not root.exists():
        return 0
    return sum(len(list(q.iterdir())) for q in root.iterdir())


def test_unacked_deliveries_make_other_backlogs_page(brokers):
    b = brokers("--queue-memory-budget", "4MiB")
    c = pika.BlockingConnection(params(b))
    ch = c.channel()
    ch.queue_declare("held.a", durable=False)
    ch.queue_declare("held.b", durable=False)
    small = b"." * 1024
    # 2400 x (1 KiB + bookkeeping) ~ 3.1 MB: over half the budget, under one queue's share.
    for _ in range(2400):
        ch.basic_publish("", "held.b", small, pika.BasicProperties(delivery_mode=1))
    ch.queue_declare("held.b", passive=True)  # a round trip: every publish handled
    assert scratch_files(b.data_dir) == 0, "alone, the backlog fits its share of the budget"

    # A consumer that never acks holds 30 x 100 KiB = 3 MB of deliveries on held.a. One
    # publish at a time (confirms), so each goes straight from held.a's head to the consumer.
    c2 = pika.BlockingConnection(params(b))
    ch2 = c2.channel()
    got = []
    ch2.basic_consume("held.a", lambda *a: got.append(a[1].delivery_tag), auto_ack=False)
    pub = c.channel()
    pub.confirm_delivery()
    big = b"x" * (100 * 1024)
    for i in range(30):
        pub.basic_publish("", "held.a", big, pika.BasicProperties(delivery_mode=1))
        deadline = time.monotonic() + 10
        while len(got) <= i and time.monotonic() < deadline:
            c2.process_data_events(time_limit=0.05)
    assert len(got) == 30
    assert scratch_files(b.data_dir) == 0, "nothing paged yet"

    # The next round of held.b sees the budget constrained by the unacked bytes: its share
    # is now 4 MiB / 2 queues, and its 3.1 MB head pages the excess out.
    for _ in range(10):
        ch.basic_publish("", "held.b", small, pika.BasicProperties(delivery_mode=1))
    wait_until(lambda: scratch_files(b.data_dir) > 0, 20, "held.b pages to its scratch log")
    # Nothing lost: every message of held.b is still there, and comes back in order.
    assert ch.queue_declare("held.b", passive=True).method.message_count == 2410
    n = 0
    for method, _p, _body in ch.consume("held.b", auto_ack=True, inactivity_timeout=10):
        assert method is not None, f"stalled after {n}"
        n += 1
        if n == 2410:
            break
    ch.cancel()
    c2.close()
    c.close()


def content_header(channel: int, body_size: int) -> bytes:
    payload = struct.pack(">HHQH", 60, 0, body_size, 0)
    return struct.pack(">BHI", 2, channel, len(payload)) + payload + b"\xce"


def publish_header(channel: int, body_size: int) -> bytes:
    return (method_frame(channel, pika.spec.Basic.Publish(exchange="", routing_key="q"))
            + content_header(channel, body_size))


def read_until(s, pred, timeout=10.0):
    buf = bytearray()
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed: {seen}")
        buf += chunk
        for f in read_frames(buf):
            seen.append(f)
            if pred(f):
                return seen
    raise AssertionError(f"timed out: {seen}")


def test_multi_frame_assembly_is_capped_per_connection(brokers):
    mib = 1 << 20
    b = brokers("--max-assembly-bytes", str(150 * mib), "--max-message-size", str(128 * mib))
    s = raw_connect(b)
    expect_open(s)
    opens = b"".join(method_frame(n, pika.spec.Channel.Open()) for n in (2, 3, 4))
    s.sendall(opens + publish_header(1, 100 * mib) + publish_header(2, 100 * mib))
    seen = read_until(s, lambda f: isinstance(f[1], pika.spec.Channel.Close))
    ch, close = seen[-1]
    assert ch == 2 and close.reply_code == 406, (ch, close)
    assert "max_assembly_bytes" in close.reply_text
    # 100 MiB + 40 MiB fits under 150 MiB: channel 3's header is accepted (a close would
    # come before the answer to the basic.qos that follows it on channel 4).
    s.sendall(method_frame(2, pika.spec.Channel.CloseOk()) + publish_header(3, 40 * mib)
              + method_frame(4, pika.spec.Basic.Qos(prefetch_count=1)))
    seen = read_until(s, lambda f: isinstance(f[1], pika.spec.Basic.QosOk))
    assert not [f for f in seen if isinstance(f[1], (pika.spec.Channel.Close,
                                                      pika.spec.Connection.Close))], seen
    s.close()
