"""Acknowledgements: basic.get, ack / nack / reject with and without requeue,
redelivery after a consumer crash, consumer cancellation by queue deletion."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pika
import pytest

from amqp_helpers import bodies, get_all, ready_count, wait_for


def publish_all(ch, q, items):
    ch.confirm_delivery()
    for item in items:
        ch.basic_publish("", q, item if isinstance(item, bytes) else item.encode())


@pytest.fixture
def queue(ch, uniq):
    return ch.queue_declare(uniq("q.ack"), exclusive=True).method.queue


# --------------------------------------------------------------- basic.get
def test_basic_get_and_get_empty(ch, queue):
    assert ch.basic_get(queue) == (None, None, None)  # get-empty
    publish_all(ch, queue, ["g1", "g2"])
    m1, _p, b1 = ch.basic_get(queue)
    assert b1 == b"g1"
    assert m1.message_count == 1            # messages left after this one
    assert m1.redelivered is False
    assert m1.exchange == "" and m1.routing_key == queue
    m2, _p, b2 = ch.basic_get(queue)
    assert b2 == b"g2" and m2.message_count == 0
    assert m2.delivery_tag == m1.delivery_tag + 1
    assert ch.basic_get(queue) == (None, None, None)
    ch.basic_ack(m2.delivery_tag, multiple=True)
    assert ch.basic_get(queue) == (None, None, None)


def test_basic_get_auto_ack_removes_message(conn, ch, queue):
    publish_all(ch, queue, ["auto"])
    other = conn.channel()
    m, _p, body = other.basic_get(queue, auto_ack=True)
    assert body == b"auto"
    other.close()  # nothing to requeue
    assert ch.basic_get(queue) == (None, None, None)


def test_unacked_get_requeued_on_channel_close(conn, ch, queue):
    publish_all(ch, queue, ["x1", "x2"])
    other = conn.channel()
    m, _p, body = other.basic_get(queue, auto_ack=False)
    assert body == b"x1"
    assert ready_count(ch, queue) == 1
    other.close()
    msgs = get_all(ch, queue)
    assert bodies(msgs) == [b"x1", b"x2"]
    assert [m.redelivered for m, _p, _b in msgs] == [True, False]


# --------------------------------------------------------------- reject / nack
def test_reject_and_nack_requeue_to_original_position(ch, queue):
    publish_all(ch, queue, [f"m{i}" for i in range(1, 6)])
    got = [ch.basic_get(queue) for _ in range(3)]          # m1, m2, m3 unacked
    assert bodies(got) == [b"m1", b"m2", b"m3"]
    ch.basic_reject(got[2][0].delivery_tag, requeue=True)   # m3 first...
    ch.basic_nack(got[0][0].delivery_tag, requeue=True)     # ...then m1
    ch.basic_ack(got[1][0].delivery_tag)
    msgs = get_all(ch, queue)
    # requeued messages go back to their original place, not to the tail
    assert bodies(msgs) == [b"m1", b"m3", b"m4", b"m5"]
    assert [m.redelivered for m, _p, _b in msgs] == [True, True, False, False]


def test_reject_without_requeue_drops(ch, queue):
    publish_all(ch, queue, ["drop", "keep"])
    m, _p, _b = ch.basic_get(queue)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m2, _p, _b = ch.basic_get(queue)
    ch.basic_nack(m2.delivery_tag, requeue=True)
    assert bodies(get_all(ch, queue)) == [b"keep"]


def test_nack_multiple(ch, queue):
    publish_all(ch, queue, [f"n{i}" for i in range(1, 7)])
    got = [ch.basic_get(queue) for _ in range(5)]          # n1..n5 unacked, n6 ready
    # requeue n1..n3 in one go, n4 and n5 stay unacked
    ch.basic_nack(got[2][0].delivery_tag, multiple=True, requeue=True)
    # (no queue.declare count check here: ack/nack are asynchronous, and
    # RabbitMQ answers a passive declare ahead of queued requeues)
    again = [ch.basic_get(queue) for _ in range(3)]
    assert bodies(again) == [b"n1", b"n2", b"n3"]
    assert all(m.redelivered for m, _p, _b in again)
    # discard everything outstanding: delivery tag 0 with multiple means all
    ch.basic_nack(0, multiple=True, requeue=False)
    msgs = get_all(ch, queue)
    assert bodies(msgs) == [b"n6"]


def test_ack_multiple(ch, queue):
    publish_all(ch, queue, ["a", "b", "c"])
    got = [ch.basic_get(queue) for _ in range(3)]
    ch.basic_ack(got[1][0].delivery_tag, multiple=True)  # acks a and b
    ch.basic_nack(got[2][0].delivery_tag, requeue=True)
    msgs = get_all(ch, queue)
    assert bodies(msgs) == [b"c"] and msgs[0][0].redelivered


def test_consumer_nack_requeue_redelivers_with_flag(conn, ch, queue):
    publish_all(ch, queue, ["retry-me"])
    cch = conn.channel()
    seen = []

    def on_msg(c, method, props, body):
        seen.append((body, method.redelivered))
        if len(seen) == 1:
            c.basic_nack(method.delivery_tag, requeue=True)
        else:
            c.basic_ack(method.delivery_tag)

    cch.basic_consume(queue, on_msg)
    wait_for(conn, lambda: len(seen) >= 2, 10, "redelivery after nack")
    assert seen == [(b"retry-me", False), (b"retry-me", True)]


def test_unknown_delivery_tag_ack_is_406(conn, ch, queue):
    publish_all(ch, queue, ["t"])
    bad = conn.channel()
    m, _p, _b = bad.basic_get(queue)
    bad.basic_ack(m.delivery_tag)
    bad.basic_ack(m.delivery_tag)  # double ack: unknown delivery tag
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        bad.basic_get(queue)  # the close arrives in response to the next sync call
    assert ei.value.reply_code == 406
    assert "unknown delivery tag" in ei.value.reply_text.lower()


# --------------------------------------------------------------- crash
CRASHING_CONSUMER = textwrap.dedent("""
    import sys, time, pika
    url, queue = sys.argv[1], sys.argv[2]
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)
    def on_msg(c, m, p, body):
        print("GOT", body.decode(), m.redelivered, flush=True)
        time.sleep(3600)   # never acks; killed by the test
    ch.basic_consume(queue, on_msg)
    print("READY", flush=True)
    ch.start_consuming()
""")


def test_consumer_crash_redelivers_to_other_consumer(broker, conn, ch, uniq, cleanup):
    q = cleanup.queue(uniq("q.crash"))
    ch.queue_declare(q, durable=True)
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_CONSUMER, broker.url, q],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        publish_all(ch, q, ["job-1"])
        assert proc.stdout.readline().strip() == "GOT job-1 False"

        # a second consumer, registered while job-1 is out with the first one
        other = conn.channel()
        got = []
        other.basic_consume(q, lambda c, m, p, b: (got.append((b, m.redelivered)),
                                                   c.basic_ack(m.delivery_tag)))
        conn.process_data_events(time_limit=0.3)
        assert got == [], "message was delivered twice while the first consumer held it"

        proc.kill()      # crash: no ack, no connection.close
        proc.wait(10)
        wait_for(conn, lambda: got, 15, "redelivery after consumer crash")
        assert got == [(b"job-1", True)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
    assert ready_count(ch, q) == 0


def test_closed_connection_unacked_requeued(connect, ch, uniq, cleanup):
    q = cleanup.queue(uniq("q.close"))
    ch.queue_declare(q, durable=True)
    publish_all(ch, q, ["c1", "c2", "c3"])
    c2 = connect()
    cch = c2.channel()
    seen = []
    cch.basic_consume(q, lambda c, m, p, b: seen.append(b))
    wait_for(c2, lambda: len(seen) == 3, 10, "deliveries")
    c2.close()
    msgs = get_all(ch, q)
    assert bodies(msgs) == [b"c1", b"c2", b"c3"]
    assert all(m.redelivered for m, _p, _b in msgs)


# --------------------------------------------------------------- cancel
def test_queue_delete_cancels_consumers(connect, uniq, cleanup):
    q = cleanup.queue(uniq("q.cancel"))
    consumer_conn = connect()
    cch = consumer_conn.channel()
    cch.queue_declare(q)
    cancelled = []
    cch.add_on_cancel_callback(lambda method_frame: cancelled.append(method_frame))
    tag = cch.basic_consume(q, lambda *a: None)
    assert tag in cch.consumer_tags

    admin = connect().channel()
    assert admin.queue_declare(q, passive=True).method.consumer_count == 1
    admin.queue_delete(q)

    wait_for(consumer_conn, lambda: cancelled, 10, "basic.cancel from the broker")
    method = cancelled[0].method
    assert isinstance(method, pika.spec.Basic.Cancel)
    assert method.consumer_tag == tag
    assert tag not in cch.consumer_tags
    # the channel and connection survive the cancellation
    assert cch.is_open and consumer_conn.is_open
    q2 = cch.queue_declare("", exclusive=True).method.queue
    assert q2.startswith("amq.gen-")


def test_basic_cancel_by_client_stops_deliveries(conn, ch, queue):
    cch = conn.channel()
    got = []
    tag = cch.basic_consume(queue, lambda c, m, p, b: (got.append(b), c.basic_ack(m.delivery_tag)))
    publish_all(ch, queue, ["before"])
    wait_for(conn, lambda: got, 10, "delivery")
    cch.basic_cancel(tag)
    ch.basic_publish("", queue, b"after")
    assert ready_count(ch, queue) == 1
    assert got == [b"before"]
