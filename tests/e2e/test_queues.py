"""Queue declaration, equivalence, exclusivity, purge and delete."""

from __future__ import annotations

import pika
import pytest

from amqp_helpers import bodies, get_all, ready_count, wait_for

Closed = pika.exceptions.ChannelClosedByBroker


def test_server_named_queue(ch):
    ok = ch.queue_declare("", exclusive=True).method
    assert ok.queue.startswith("amq.gen-") and len(ok.queue) > len("amq.gen-")
    assert ok.message_count == 0 and ok.consumer_count == 0
    other = ch.queue_declare("", exclusive=True).method.queue
    assert other.startswith("amq.gen-") and other != ok.queue
    ch.confirm_delivery()
    ch.basic_publish("", ok.queue, b"hello")
    assert bodies(get_all(ch, ok.queue)) == [b"hello"]


def test_declare_ok_reports_counts(conn, ch, uniq):
    q = ch.queue_declare(uniq("q.counts"), exclusive=True).method.queue
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", q, b"x")
    cch = conn.channel()
    cch.basic_qos(prefetch_count=1)
    got = []
    cch.basic_consume(q, lambda c, m, p, b: got.append(m))
    wait_for(conn, lambda: got, 10, "delivery")
    ok = ch.queue_declare(q, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 2, 1)
    # a non-passive redeclare with the same properties also succeeds
    ok2 = ch.queue_declare(q, exclusive=True).method
    assert (ok2.message_count, ok2.consumer_count) == (2, 1)


def test_passive_declare_missing_queue_404(conn, uniq):
    ch = conn.channel()
    with pytest.raises(Closed) as ei:
        ch.queue_declare(uniq("q.missing"), passive=True)
    assert ei.value.reply_code == 404
    assert ei.value.reply_text.startswith("NOT_FOUND")
    assert ch.is_closed
    assert conn.is_open                   # a channel error, not a connection error
    assert conn.channel().queue_declare("", exclusive=True).method.queue


@pytest.mark.parametrize("first,second", [
    ({"durable": False}, {"durable": True}),
    ({"durable": True}, {"durable": False}),
    ({"auto_delete": False}, {"auto_delete": True}),
    ({"arguments": {"x-max-length": 10}}, {"arguments": {"x-max-length": 20}}),
    ({"arguments": {"x-max-length": 10}}, {}),
    ({}, {"arguments": {"x-max-length": 10}}),
], ids=["durable-to-transient", "transient-to-durable", "auto-delete",
        "arg-value", "arg-removed", "arg-added"])
def test_redeclare_with_different_properties_406(conn, uniq, cleanup, first, second):
    q = cleanup.queue(uniq("q.redecl"))
    ch = conn.channel()
    ch.queue_declare(q, **first)
    ch.queue_declare(q, **first)  # identical redeclare is fine
    with pytest.raises(Closed) as ei:
        ch.queue_declare(q, **second)
    assert ei.value.reply_code == 406
    assert ei.value.reply_text.startswith("PRECONDITION_FAILED")
    assert conn.is_open
    # the queue is unchanged and still usable
    assert conn.channel().queue_declare(q, passive=True).method.queue == q


def test_exclusive_queue_locked_for_other_connections_405(connect, uniq):
    owner = connect()
    och = owner.channel()
    q = och.queue_declare(uniq("q.excl"), exclusive=True).method.queue
    other = connect()

    for action in [
        lambda c: c.queue_declare(q, passive=True),
        lambda c: c.queue_declare(q, exclusive=True),
        lambda c: c.queue_declare(q),
        lambda c: c.basic_consume(q, lambda *a: None),
        lambda c: c.basic_get(q),
        lambda c: c.queue_delete(q),
        lambda c: c.queue_purge(q),
    ]:
        ch = other.channel()
        with pytest.raises(Closed) as ei:
            action(ch)
        assert ei.value.reply_code == 405, ei.value
        assert ei.value.reply_text.startswith("RESOURCE_LOCKED")
    assert other.is_open

    # the owner can use it from any of its channels
    och2 = owner.channel()
    och2.confirm_delivery()
    och2.basic_publish("", q, b"mine")
    assert bodies(get_all(och2, q)) == [b"mine"]

    # and it disappears with its connection
    owner.close()
    ch = other.channel()
    with pytest.raises(Closed) as ei:
        ch.queue_declare(q, passive=True)
    assert ei.value.reply_code == 404


def test_exclusive_consumer_refuses_others_403(connect, uniq, cleanup):
    q = cleanup.queue(uniq("q.exclcons"))
    c1 = connect().channel()
    c1.queue_declare(q)
    c1.basic_consume(q, lambda *a: None, exclusive=True)
    c2 = connect().channel()
    with pytest.raises(Closed) as ei:
        c2.basic_consume(q, lambda *a: None)
    assert ei.value.reply_code == 403


def test_queue_purge(ch, uniq):
    q = ch.queue_declare(uniq("q.purge"), exclusive=True).method.queue
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    unacked = ch.basic_get(q)[0]               # purge leaves unacked messages alone
    assert ch.queue_purge(q).method.message_count == 4
    assert ch.basic_get(q) == (None, None, None)
    ch.basic_nack(unacked.delivery_tag, requeue=True)
    assert bodies(get_all(ch, q)) == [b"0"]
    assert ch.queue_purge(q).method.message_count == 0


def test_queue_delete_returns_message_count(ch, uniq):
    q = ch.queue_declare(uniq("q.del"), exclusive=True).method.queue
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", q, b"x")
    assert ch.queue_delete(q).method.message_count == 3
    with pytest.raises(Closed) as ei:
        ch.queue_declare(q, passive=True)
    assert ei.value.reply_code == 404


def test_queue_delete_if_unused(connect, uniq):
    conn = connect()
    ch = conn.channel()
    q = ch.queue_declare(uniq("q.ifunused"), exclusive=True).method.queue
    cch = conn.channel()
    tag = cch.basic_consume(q, lambda *a: None)
    with pytest.raises(Closed) as ei:
        ch.queue_delete(q, if_unused=True)
    assert ei.value.reply_code == 406
    ch = conn.channel()
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    cch.basic_cancel(tag)
    ch.queue_delete(q, if_unused=True)
    with pytest.raises(Closed):
        conn.channel().queue_declare(q, passive=True)


def test_queue_delete_if_empty(conn, uniq):
    ch = conn.channel()
    q = ch.queue_declare(uniq("q.ifempty"), exclusive=True).method.queue
    ch.confirm_delivery()
    ch.basic_publish("", q, b"x")
    with pytest.raises(Closed) as ei:
        ch.queue_delete(q, if_empty=True)
    assert ei.value.reply_code == 406
    ch = conn.channel()
    assert ready_count(ch, q) == 1
    get_all(ch, q)
    assert ch.queue_delete(q, if_empty=True).method.message_count == 0
    with pytest.raises(Closed):
        conn.channel().queue_declare(q, passive=True)


def test_delete_and_unbind_are_idempotent(ch, uniq):
    ch.queue_delete(uniq("q.never"))                   # missing queue: delete-ok
    ch.exchange_delete(uniq("x.never"))                # missing exchange: delete-ok
    x = uniq("x.unbind")
    ch.exchange_declare(x, "direct", auto_delete=False)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_unbind(q, x, "never-bound")               # missing binding: unbind-ok
    ch.exchange_delete(x)
    assert ch.is_open


def test_reserved_amq_prefix_refused_403(conn):
    ch = conn.channel()
    with pytest.raises(Closed) as ei:
        ch.queue_declare("amq.e2e-reserved", exclusive=True)
    assert ei.value.reply_code == 403
    ch = conn.channel()
    with pytest.raises(Closed) as ei:
        ch.exchange_declare("amq.e2e-reserved", "direct")
    assert ei.value.reply_code == 403


def test_auto_delete_queue_goes_with_last_consumer(connect, uniq):
    conn = connect()
    ch = conn.channel()
    q = uniq("q.autodel")
    ch.queue_declare(q, auto_delete=True)
    tag = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(tag)
    with pytest.raises(Closed) as ei:
        conn.channel().queue_declare(q, passive=True)
    assert ei.value.reply_code == 404


def test_bind_to_missing_exchange_or_queue_404(conn, uniq):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    with pytest.raises(Closed) as ei:
        ch.queue_bind(q, uniq("x.missing"), "k")
    assert ei.value.reply_code == 404
    ch = conn.channel()
    with pytest.raises(Closed) as ei:
        ch.queue_bind(uniq("q.missing"), "amq.direct", "k")
    assert ei.value.reply_code == 404


def test_predeclared_exchanges_exist(ch):
    for name, xtype in [("amq.direct", "direct"), ("amq.fanout", "fanout"),
                        ("amq.topic", "topic"), ("amq.headers", "headers"),
                        ("amq.match", "headers")]:
        ch.exchange_declare(name, xtype, passive=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "e2e.#")
    ch.confirm_delivery()
    ch.basic_publish("amq.topic", "e2e.x.y", b"via-amq-topic")
    assert bodies(get_all(ch, q)) == [b"via-amq-topic"]
