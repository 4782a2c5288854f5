"""Delayed messages (`x-delayed-message` exchange, `x-delay` header), sender-selected
distribution (`CC` / `BCC`) and exchange-level de-duplication (`x-message-deduplication`).

The delayed and de-duplication tests need FerryMQ (RabbitMQ here has neither plugin) and
skip against an external broker; the CC/BCC tests run against RabbitMQ too."""

from __future__ import annotations

import os
import re
import time

import pika
import pytest

from amqp_helpers import bodies, get_all, params_for, wait_for
from ferrybroker import external_url

needs_ferrymq = pytest.mark.skipif(
    bool(external_url()), reason="x-delayed-message / x-message-deduplication are FerryMQ built-ins")


def consume_times(conn, ch, queue, n, timeout=15.0):
    """Consume n messages; returns [(body, arrival monotonic time, headers)]."""
    got = []

    def on(chan, method, props, body):
        got.append((body, time.monotonic(), props.headers))
        chan.basic_ack(method.delivery_tag)

    tag = ch.basic_consume(queue, on)
    wait_for(conn, lambda: len(got) >= n, timeout, f"{n} messages on {queue}")
    ch.basic_cancel(tag)
    return got


def delayed_exchange(ch, name, kind="direct", durable=False):
    ch.exchange_declare(name, "x-delayed-message", durable=durable,
                        arguments={"x-delayed-type": kind})


@needs_ferrymq
def test_delays_are_honoured_and_order_is_by_due_time(conn, ch, uniq, cleanup):
    x, q = cleanup.exchange(uniq("dx")), cleanup.queue(uniq("dq"))
    delayed_exchange(ch, x)
    ch.queue_declare(q)
    ch.queue_bind(q, x, "k")
    ch.confirm_delivery()
    delays = [600, 200, 400, 0, 300]
    sent = {}
    for d in delays:
        sent[str(d).encode()] = time.monotonic() + d / 1000
        ch.basic_publish(x, "k", str(d).encode(),
                         pika.BasicProperties(headers={"x-delay": d}))
    got = consume_times(conn, ch, q, len(delays))
    assert [b for b, _, _ in got] == [b"0", b"200", b"300", b"400", b"600"], \
        "released by due time, not publish time"
    for body, at, _ in got:
        lateness = at - sent[body]
        # Typically 1-5 ms (see bench/delayed.py); the bound leaves room for a loaded
        # machine while still catching coarse polling.
        assert -0.005 < lateness < 0.25, (body, lateness)


@needs_ferrymq
def test_lateness_of_many_short_delays(conn, ch, uniq, cleanup):
    x, q = cleanup.exchange(uniq("dx")), cleanup.queue(uniq("dq"))
    delayed_exchange(ch, x, "fanout")
    ch.queue_declare(q)
    ch.queue_bind(q, x)
    due = {}
    for i in range(200):
        d = 200 + (i * 7) % 300
        due[str(i).encode()] = time.monotonic() + d / 1000
        ch.basic_publish(x, "", str(i).encode(), pika.BasicProperties(headers={"x-delay": d}))
    got = consume_times(conn, ch, q, 200)
    late = sorted(at - due[b] for b, at, _ in got)
    assert late[0] > -0.005, late[0]
    print(f"lateness p50 {late[len(late) // 2] * 1000:.1f} ms, max {late[-1] * 1000:.1f} ms")
    assert late[len(late) // 2] < 0.05, late[len(late) // 2]
    assert late[int(len(late) * 0.99) - 1] < 0.25, late[-5:]


@needs_ferrymq
def test_underlying_topic_and_headers_and_bindings_at_due_time(conn, ch, uniq, cleanup):
    xt, xh = cleanup.exchange(uniq("dt")), cleanup.exchange(uniq("dh"))
    q1, q2 = cleanup.queue(uniq("q1")), cleanup.queue(uniq("q2"))
    delayed_exchange(ch, xt, "topic")
    delayed_exchange(ch, xh, "headers")
    ch.queue_declare(q1)
    ch.queue_declare(q2)
    ch.queue_bind(q1, xt, "orders.#")
    ch.queue_bind(q2, xh, arguments={"x-match": "all", "kind": "invoice"})
    ch.basic_publish(xt, "orders.eu.new", b"t1", pika.BasicProperties(headers={"x-delay": 150}))
    ch.basic_publish(xt, "users.new", b"t-unrouted", pika.BasicProperties(headers={"x-delay": 150}))
    ch.basic_publish(xh, "", b"h1", pika.BasicProperties(headers={"x-delay": 150, "kind": "invoice"}))
    ch.basic_publish(xh, "", b"h-no", pika.BasicProperties(headers={"x-delay": 150, "kind": "memo"}))
    # Bound after publishing, before due: the binding as it is at due time counts.
    ch.queue_bind(q1, xt, "users.*")
    assert get_all(ch, q1) == [] and get_all(ch, q2) == [], "nothing before the delay"
    got1 = consume_times(conn, ch, q1, 2)
    got2 = consume_times(conn, ch, q2, 1)
    assert sorted(b for b, _, _ in got1) == [b"t-unrouted", b"t1"]
    assert [b for b, _, _ in got2] == [b"h1"]
    assert got2[0][2]["kind"] == b"invoice" or got2[0][2]["kind"] == "invoice"
    time.sleep(0.1)
    assert get_all(ch, q2) == []


@needs_ferrymq
def test_no_delay_routes_now_and_bad_declare_is_406(connect, uniq, cleanup):
    conn = connect()
    ch = conn.channel()
    x, q = cleanup.exchange(uniq("dx")), cleanup.queue(uniq("dq"))
    delayed_exchange(ch, x)
    ch.queue_declare(q)
    ch.queue_bind(q, x, "k")
    for h in [None, {"x-delay": 0}, {"x-delay": -500}]:
        ch.basic_publish(x, "k", b"now", pika.BasicProperties(headers=h))
    assert len(get_all(ch, q)) == 3
    for args in [{}, {"x-delayed-type": "nope"}, {"x-delayed-type": "x-delayed-message"}]:
        bad = connect().channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            bad.exchange_declare(uniq("bad"), "x-delayed-message", arguments=args)
        assert e.value.reply_code == 406


@needs_ferrymq
def test_exchange_delete_drops_pending(conn, ch, uniq, cleanup):
    x, q = uniq("dx"), cleanup.queue(uniq("dq"))
    delayed_exchange(ch, x)
    ch.queue_declare(q)
    ch.queue_bind(q, x, "k")
    for _ in range(5):
        ch.basic_publish(x, "k", b"doomed", pika.BasicProperties(headers={"x-delay": 300}))
    ch.exchange_delete(x)
    delayed_exchange(ch, x)  # same name again: a new, empty exchange
    ch.queue_bind(q, x, "k")
    time.sleep(0.6)
    assert get_all(ch, q) == []
    ch.exchange_delete(x)


def pending_lines(b):
    return [int(m.group(1)) for m in re.finditer(r"delayed exchange: (\d+) pending messages",
                                                  b.output_tail(400))]


@needs_ferrymq
@pytest.mark.parametrize("crash", [False, True], ids=["restart", "kill9"])
def test_durable_delayed_messages_survive_restart(private_broker, crash):
    b = private_broker()
    c = pika.BlockingConnection(params_for(b.url))
    ch = c.channel()
    delayed_exchange(ch, "dur.dx", "direct", durable=True)
    ch.queue_declare("dur.q", durable=True)
    ch.queue_bind("dur.q", "dur.dx", "k")
    ch.confirm_delivery()
    published = time.time()
    for i, d in enumerate([2500, 3000, 100]):
        ch.basic_publish("dur.dx", "k", f"m{i}".encode(),
                         pika.BasicProperties(delivery_mode=2, headers={"x-delay": d}))
    # Transient messages are not kept across a restart, like in durable queues.
    ch.basic_publish("dur.dx", "k", b"transient", pika.BasicProperties(headers={"x-delay": 2500}))
    # m2 (100 ms) reaches the durable queue before the restart.
    wait_for(c, lambda: ch.queue_declare("dur.q", passive=True).method.message_count == 1,
             5, "m2 in the queue")
    time.sleep(0.3)  # its delay-log ack is fsynced within 100 ms
    c.close()
    b.restart(crash=crash)
    assert 2 in pending_lines(b), b.output_tail()
    c = pika.BlockingConnection(params_for(b.url))
    ch = c.channel()
    got = []

    def on(chan, method, props, body):
        got.append((body, time.time()))
        chan.basic_ack(method.delivery_tag)

    ch.basic_consume("dur.q", on)
    wait_for(c, lambda: len(got) >= 3, 15, "3 messages after restart")
    c.process_data_events(time_limit=0.5)
    assert [g[0] for g in got] == [b"m2", b"m0", b"m1"], got
    for body, at in got[1:]:
        due = published + {b"m0": 2.5, b"m1": 3.0}[body]
        assert -0.01 < at - due < 0.2, (body, at - due)
    c.close()


@needs_ferrymq
def test_overdue_after_restart_delivered_at_once(private_broker):
    b = private_broker()
    c = pika.BlockingConnection(params_for(b.url))
    ch = c.channel()
    delayed_exchange(ch, "od.dx", "fanout", durable=True)
    ch.queue_declare("od.q", durable=True)
    ch.queue_bind("od.q", "od.dx")
    ch.confirm_delivery()
    ch.basic_publish("od.dx", "", b"late", pika.BasicProperties(delivery_mode=2, headers={"x-delay": 500}))
    c.close()
    b.kill9()
    time.sleep(1.0)
    b.start()
    c = pika.BlockingConnection(params_for(b.url))
    ch = c.channel()
    wait_for(c, lambda: bodies(get_all(ch, "od.q")) == [b"late"] or None, 5, "overdue message")
    c.close()


@needs_ferrymq
def test_100k_pending_memory(private_broker):
    b = private_broker()
    c = pika.BlockingConnection(params_for(b.url))
    ch = c.channel()
    delayed_exchange(ch, "mem.dx", "direct", durable=True)
    ch.queue_declare("mem.q", durable=True)
    ch.queue_bind("mem.q", "mem.dx", "k")

    def rss_kb():
        with open(f"/proc/{b.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    body = b"x" * 200
    props = pika.BasicProperties(delivery_mode=2, headers={"x-delay": 3_600_000})
    for _ in range(5_000):
        ch.basic_publish("mem.dx", "k", body, props)
    ch.confirm_delivery()
    ch.basic_publish("mem.dx", "k", body, props)
    before = rss_kb()
    ch = c.channel()
    for _ in range(95_000):
        ch.basic_publish("mem.dx", "k", body, props)
    ch.confirm_delivery()
    ch.basic_publish("mem.dx", "k", body, props)
    after = rss_kb()
    c.close()
    per_msg = (after - before) * 1024 / 95_000
    # Bodies (200 B + properties) are on disk; the index entry is 16 bytes (32 with heap
    # growth). Allow for allocator noise, far below the ~300 B a message would cost.
    print(f"{per_msg:.1f} bytes of RSS per pending message")
    assert per_msg < 100, f"{per_msg:.1f} bytes of RSS per pending message"
    b.restart()
    assert 100_002 in pending_lines(b), b.output_tail()


@pytest.mark.parametrize("kind", ["direct", "topic"])
def test_cc_and_bcc_route_and_bcc_is_stripped(ch, uniq, cleanup, kind):
    x = cleanup.exchange(uniq("ccx"))
    ch.exchange_declare(x, kind)
    qs = [cleanup.queue(uniq(f"q{i}")) for i in range(4)]
    for i, q in enumerate(qs):
        ch.queue_declare(q)
        ch.queue_bind(q, x, f"key{i}")
    ch.basic_publish(x, "key0", b"hello", pika.BasicProperties(
        headers={"CC": ["key1", "key0"], "BCC": ["key2"], "other": "kept"}))
    got = [get_all(ch, q) for q in qs]
    assert [len(g) for g in got] == [1, 1, 1, 0], "each queue once, key3 not addressed"
    for g in got[:3]:
        h = g[0][1].headers
        assert "BCC" not in h
        assert [v.decode() if isinstance(v, bytes) else v for v in h["CC"]] == ["key1", "key0"]
        assert h["other"] in ("kept", b"kept")


def test_cc_on_default_exchange_and_bad_type(connect, uniq, cleanup):
    conn = connect()
    ch = conn.channel()
    a, b_ = cleanup.queue(uniq("a")), cleanup.queue(uniq("b"))
    ch.queue_declare(a)
    ch.queue_declare(b_)
    ch.basic_publish("", a, b"x", pika.BasicProperties(headers={"BCC": [b_]}))
    assert len(get_all(ch, a)) == 1 and len(get_all(ch, b_)) == 1
    bad = connect().channel()
    bad.basic_publish("", a, b"x", pika.BasicProperties(headers={"CC": "not-an-array"}))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        bad.queue_declare(a, passive=True)
    assert e.value.reply_code == 406


@needs_ferrymq
def test_dedup_exchange_drops_repeats_size_and_ttl(connect, uniq, cleanup):
    conn = connect()
    ch = conn.channel()
    x, q = cleanup.exchange(uniq("ddx")), cleanup.queue(uniq("ddq"))
    ch.exchange_declare(x, "x-message-deduplication",
                        arguments={"x-cache-size": 3, "x-cache-ttl": 400})
    ch.queue_declare(q)
    ch.queue_bind(q, x)
    ch.confirm_delivery()

    def pub(key, body, ttl=None, mandatory=False):
        h = {"x-deduplication-header": key}
        if ttl:
            h["x-cache-ttl"] = ttl
        ch.basic_publish(x, "", body, pika.BasicProperties(headers=h), mandatory=mandatory)

    pub("a", b"a1")
    with pytest.raises(pika.exceptions.UnroutableError):
        pub("a", b"a2", mandatory=True)  # duplicate: confirmed, routed nowhere, returned
    ch.basic_publish(x, "", b"no-header")
    assert bodies(get_all(ch, q)) == [b"a1", b"no-header"]
    for k in ["b", "c", "d"]:   # the cache holds 3: "a" is evicted
        pub(k, k.encode())
    pub("a", b"a3")
    pub("d", b"d-dup")
    assert bodies(get_all(ch, q)) == [b"b", b"c", b"d", b"a3"]
    time.sleep(0.45)            # TTL passed
    pub("d", b"d2")
    pub("e", b"e1", ttl=3000)   # the message TTL overrides the exchange's
    time.sleep(0.45)
    pub("e", b"e-dup")
    assert bodies(get_all(ch, q)) == [b"d2", b"e1"]
    bad = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        bad.exchange_declare(uniq("bad"), "x-message-deduplication", arguments={})
    assert e.value.reply_code == 406


@needs_ferrymq
def test_dedup_disk_cache_survives_restart(private_broker):
    b = private_broker()
    c = pika.BlockingConnection(params_for(b.url))
    ch = c.channel()
    ch.exchange_declare("dd.x", "x-message-deduplication", durable=True,
                        arguments={"x-cache-size": 100, "x-cache-persistence": "disk"})
    ch.queue_declare("dd.q", durable=True)
    ch.queue_bind("dd.q", "dd.x")
    ch.basic_publish("dd.x", "", b"1", pika.BasicProperties(headers={"x-deduplication-header": "k1"}))
    assert bodies(get_all(ch, "dd.q")) == [b"1"]
    c.close()
    b.restart(crash=True)
    c = pika.BlockingConnection(params_for(b.url))
    ch = c.channel()
    ch.basic_publish("dd.x", "", b"dup", pika.BasicProperties(headers={"x-deduplication-header": "k1"}))
    ch.basic_publish("dd.x", "", b"2", pika.BasicProperties(headers={"x-deduplication-header": "k2"}))
    assert bodies(get_all(ch, "dd.q")) == [b"2"]
    c.close()
