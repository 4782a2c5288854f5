"""Publisher confirms with mandatory returns; AMQP transactions (tx.*)."""

from __future__ import annotations

import pika
import pytest

from amqp_helpers import bodies, get_all, ready_count, wait_for


# --------------------------------------------------------------- confirms
def test_confirm_select_and_routable_publishes_are_acked(ch, uniq):
    q = ch.queue_declare(uniq("q.confirm"), exclusive=True).method.queue
    ch.confirm_delivery()
    for i in range(50):
        # BlockingChannel raises NackError/UnroutableError unless basic.ack came back
        ch.basic_publish("", q, str(i).encode(), mandatory=True)
    assert ready_count(ch, q) == 50


def test_unroutable_mandatory_returned_with_312_and_still_acked(ch, uniq):
    x = uniq("x.confirm")
    ch.exchange_declare(x, "direct", auto_delete=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, "routable")
    ch.confirm_delivery()
    props = pika.BasicProperties(message_id="m-1", headers={"k": "v"})
    # pika raises UnroutableError only after the broker's basic.ack arrived
    # (a basic.nack would raise NackError instead)
    with pytest.raises(pika.exceptions.UnroutableError) as ei:
        ch.basic_publish(x, "nowhere", b"lost", props, mandatory=True)
    (ret,) = ei.value.messages
    assert ret.method.reply_code == 312
    assert ret.method.reply_text == "NO_ROUTE"
    assert ret.method.exchange == x
    assert ret.method.routing_key == "nowhere"
    assert ret.body == b"lost"
    assert ret.properties.message_id == "m-1" and ret.properties.headers == {"k": "v"}
    # the return came before the ack: the next publish sees no stray return
    ch.basic_publish(x, "routable", b"kept", mandatory=True)
    # unroutable but not mandatory: silently dropped, acked
    ch.basic_publish(x, "nowhere", b"dropped", mandatory=False)
    assert bodies(get_all(ch, q)) == [b"kept"]


def test_mandatory_return_without_confirms(conn, uniq):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, b)))
    ch.basic_publish("", uniq("q.none"), b"r1", mandatory=True)
    wait_for(conn, lambda: returned, 10, "basic.return")
    method, body = returned[0]
    assert (method.reply_code, method.reply_text, body) == (312, "NO_ROUTE", b"r1")


def test_publish_after_confirm_to_deleted_queue_still_acked(ch, uniq):
    q = ch.queue_declare(uniq("q.gone"), exclusive=True).method.queue
    ch.confirm_delivery()
    ch.basic_publish("", q, b"1")
    ch.queue_delete(q)
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("", q, b"2", mandatory=True)
    ch.basic_publish("", q, b"3")  # not mandatory: acked and dropped


# --------------------------------------------------------------- tx
@pytest.fixture
def tx_queue(conn, uniq):
    ch = conn.channel()
    q = ch.queue_declare(uniq("q.tx"), exclusive=True).method.queue
    return q


def test_tx_publish_invisible_until_commit(conn, tx_queue):
    observer = conn.channel()
    tx = conn.channel()
    tx.tx_select()
    for i in range(3):
        tx.basic_publish("", tx_queue, f"t{i}".encode())
    assert ready_count(observer, tx_queue) == 0
    assert observer.basic_get(tx_queue)[0] is None
    tx.tx_commit()
    assert ready_count(observer, tx_queue) == 3
    assert bodies(get_all(observer, tx_queue)) == [b"t0", b"t1", b"t2"]


def test_tx_publish_discarded_on_rollback(conn, tx_queue):
    observer = conn.channel()
    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", tx_queue, b"rolled-back-1")
    tx.basic_publish("", tx_queue, b"rolled-back-2")
    tx.tx_rollback()
    assert ready_count(observer, tx_queue) == 0
    # the channel stays transactional: the next commit publishes only new work
    tx.basic_publish("", tx_queue, b"committed")
    tx.tx_commit()
    assert bodies(get_all(observer, tx_queue)) == [b"committed"]


def test_tx_uncommitted_publishes_discarded_on_channel_close(conn, tx_queue):
    observer = conn.channel()
    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", tx_queue, b"never")
    tx.close()
    assert ready_count(observer, tx_queue) == 0


def _load(observer, q, n):
    observer.confirm_delivery()
    for i in range(n):
        observer.basic_publish("", q, f"a{i}".encode())


def test_tx_acks_applied_on_commit(conn, tx_queue):
    observer = conn.channel()
    _load(observer, tx_queue, 3)
    tx = conn.channel()
    tx.tx_select()
    m1 = tx.basic_get(tx_queue)[0]
    m2 = tx.basic_get(tx_queue)[0]
    tx.basic_ack(m1.delivery_tag)
    tx.basic_ack(m2.delivery_tag)
    tx.tx_commit()
    tx.close()  # nothing unacked left to requeue
    assert bodies(get_all(observer, tx_queue)) == [b"a2"]


def test_tx_acks_discarded_on_rollback(conn, tx_queue):
    observer = conn.channel()
    _load(observer, tx_queue, 3)
    tx = conn.channel()
    tx.tx_select()
    m1 = tx.basic_get(tx_queue)[0]
    m2 = tx.basic_get(tx_queue)[0]
    tx.basic_ack(m1.delivery_tag)
    tx.basic_ack(m2.delivery_tag)
    tx.tx_rollback()
    # the acks were discarded: both messages are still unacked, and closing
    # the channel requeues them
    assert ready_count(observer, tx_queue) == 1
    tx.close()
    msgs = get_all(observer, tx_queue)
    assert bodies(msgs) == [b"a0", b"a1", b"a2"]
    assert [m.redelivered for m, _p, _b in msgs] == [True, True, False]


def test_tx_mixed_publish_and_ack_commit(conn, tx_queue, uniq):
    """Consume from one queue and publish results to another atomically."""
    observer = conn.channel()
    out_q = observer.queue_declare(uniq("q.txout"), exclusive=True).method.queue
    _load(observer, tx_queue, 2)
    tx = conn.channel()
    tx.tx_select()
    m, _p, body = tx.basic_get(tx_queue)
    tx.basic_publish("", out_q, b"result-of-" + body)
    tx.basic_ack(m.delivery_tag)
    assert ready_count(observer, out_q) == 0
    tx.tx_commit()
    assert bodies(get_all(observer, out_q)) == [b"result-of-a0"]
    tx.close()
    assert bodies(get_all(observer, tx_queue)) == [b"a1"]


def test_tx_commit_without_select_is_406(conn):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.tx_commit()
    assert ei.value.reply_code == 406
    assert conn.is_open


def test_confirm_and_tx_on_one_channel_is_406(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.tx_select()
    assert ei.value.reply_code == 406

    ch2 = conn.channel()
    ch2.tx_select()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch2.confirm_delivery()
    assert ei.value.reply_code == 406
