"""Reliability features across restarts (pika): TTL deadlines count from the original
enqueue time and survive a kill -9; expired messages are dead-lettered after a restart;
priority queues keep their order across a restart; a quorum queue's delivery limit still
dead-letters after a restart.

Skipped when FERRYMQ_TEST_AMQP_URL points the suite at an external broker."""

from __future__ import annotations

import time

import pika
import pytest

from amqp_helpers import params_for


def channel(url):
    c = pika.BlockingConnection(params_for(url))
    return c, c.channel()


def wait_message(ch, queue, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
        time.sleep(0.02)
    raise AssertionError(f"nothing arrived on {queue} within {timeout}s")


@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "kill9"])
def test_ttl_deadlines_survive_restart_and_dead_letter(private_broker, crash):
    b = private_broker()
    c, ch = channel(b.url)
    ch.exchange_declare("rel.dlx", "fanout", durable=True)
    ch.queue_declare("rel.dead", durable=True)
    ch.queue_bind("rel.dead", "rel.dlx")
    ch.queue_declare(
        "rel.ttl",
        durable=True,
        arguments={"x-message-ttl": 3000, "x-dead-letter-exchange": "rel.dlx"},
    )
    ch.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    published = time.time()
    ch.basic_publish("", "rel.ttl", b"queue-ttl", persistent)
    ch.basic_publish(
        "", "rel.ttl", b"message-ttl",
        pika.BasicProperties(delivery_mode=2, expiration="1500"),
    )
    ch.basic_publish("", "rel.ttl", b"control-no-expiry-left",
                     pika.BasicProperties(delivery_mode=2, expiration="600000"))
    c.close()
    b.restart(crash=crash)
    c, ch = channel(b.url)
    # The 1.5 s message expires 1.5 s after it was first enqueued, not after the restart.
    _m, props, body = wait_message(ch, "rel.dead")
    assert body == b"message-ttl"
    assert 1.4 <= time.time() - published < 2.9, time.time() - published
    death = props.headers["x-death"][0]
    assert death["reason"] == "expired" and death["queue"] == "rel.ttl"
    assert death["original-expiration"] == "1500"
    _m, props, body = wait_message(ch, "rel.dead")
    assert body == b"queue-ttl"
    assert 2.9 <= time.time() - published < 4.5, time.time() - published
    # The queue TTL (3 s) is shorter than the third message's own: it went too.
    _m, _p, body = wait_message(ch, "rel.dead")
    assert body == b"control-no-expiry-left"
    assert ch.queue_declare("rel.ttl", passive=True).method.message_count == 0
    c.close()


def test_priority_order_survives_restart(private_broker):
    b = private_broker()
    c, ch = channel(b.url)
    ch.queue_declare("rel.prio", durable=True, arguments={"x-max-priority": 5})
    ch.confirm_delivery()
    for body, p in [(b"low", 1), (b"high", 5), (b"mid", 3), (b"high-2", 5), (b"none", 0)]:
        ch.basic_publish("", "rel.prio", body, pika.BasicProperties(delivery_mode=2, priority=p))
    c.close()
    b.restart(crash=True)
    c, ch = channel(b.url)
    got = []
    while True:
        method, _p, body = ch.basic_get("rel.prio", auto_ack=True)
        if method is None:
            break
        got.append(body)
    assert got == [b"high", b"high-2", b"mid", b"low", b"none"]
    c.close()


def test_max_length_holds_across_restart(private_broker):
    b = private_broker()
    c, ch = channel(b.url)
    ch.queue_declare("rel.cap", durable=True,
                     arguments={"x-max-length": 3, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", "rel.cap", b"m%d" % i, pika.BasicProperties(delivery_mode=2))
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "rel.cap", b"over", pika.BasicProperties(delivery_mode=2))
    c.close()
    b.restart(crash=True)
    c, ch = channel(b.url)
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "rel.cap", b"still-over", pika.BasicProperties(delivery_mode=2))
    assert ch.queue_declare("rel.cap", passive=True).method.message_count == 3
    c.close()


def test_deduplicating_queue_remembers_its_keys_across_restart(private_broker):
    b = private_broker()
    c, ch = channel(b.url)
    ch.queue_declare("rel.dedup", durable=True, arguments={"x-message-deduplication": True})
    ch.confirm_delivery()
    for body, key in [(b"k1", "k1"), (b"k2", "k2"), (b"k1-again", "k1")]:
        ch.basic_publish("", "rel.dedup", body,
                         pika.BasicProperties(delivery_mode=2, headers={"x-deduplication-header": key}))
    assert ch.queue_declare("rel.dedup", passive=True).method.message_count == 2
    c.close()
    b.restart(crash=True)
    c, ch = channel(b.url)
    ch.confirm_delivery()
    ch.basic_publish("", "rel.dedup", b"k2-after-restart",
                     pika.BasicProperties(delivery_mode=2, headers={"x-deduplication-header": "k2"}))
    ch.basic_publish("", "rel.dedup", b"k3",
                     pika.BasicProperties(delivery_mode=2, headers={"x-deduplication-header": "k3"}))
    got = []
    while True:
        method, _p, body = ch.basic_get("rel.dedup", auto_ack=True)
        if method is None:
            break
        got.append(body)
    assert got == [b"k1", b"k2", b"k3"]
    c.close()
