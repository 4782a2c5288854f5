"""RPC request/reply: an exclusive reply queue, and direct reply-to
(amq.rabbitmq.reply-to)."""

from __future__ import annotations

import threading
import uuid

import pika
import pytest

from amqp_helpers import params_for, wait_for

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


class RpcServer(threading.Thread):
    """Consumes `queue`; replies to reply_to with the square of the int body."""

    def __init__(self, url, queue):
        super().__init__(daemon=True, name="rpc-server")
        self.url, self.queue = url, queue
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.seen_reply_to = []
        self.error = None

    def run(self):
        try:
            conn = pika.BlockingConnection(params_for(self.url))
            ch = conn.channel()
            ch.queue_declare(self.queue, exclusive=True)
            ch.basic_qos(prefetch_count=5)

            def on_request(chan, method, props, body):
                self.seen_reply_to.append(props.reply_to)
                reply = str(int(body) ** 2).encode()
                chan.basic_publish("", props.reply_to, reply, pika.BasicProperties(
                    correlation_id=props.correlation_id))
                chan.basic_ack(method.delivery_tag)

            ch.basic_consume(self.queue, on_request)
            self.ready.set()
            while not self.stop.is_set():
                conn.process_data_events(time_limit=0.05)
            conn.close()
        except Exception as e:
            self.error = e
            self.ready.set()


@pytest.fixture
def rpc_server(broker, uniq):
    srv = RpcServer(broker.url, uniq("q.rpc"))
    srv.start()
    assert srv.ready.wait(15) and srv.error is None, srv.error
    yield srv
    srv.stop.set()
    srv.join(10)
    assert srv.error is None, srv.error


def call_all(conn, ch, server_queue, reply_to, replies, numbers):
    corr = {}
    for n in numbers:
        cid = uuid.uuid4().hex
        corr[cid] = n
        ch.basic_publish("", server_queue, str(n).encode(),
                         pika.BasicProperties(reply_to=reply_to, correlation_id=cid))
    wait_for(conn, lambda: len(replies) >= len(numbers), 15, "RPC replies")
    results = {}
    for props, body in replies:
        assert props.correlation_id in corr, f"unknown correlation id {props.correlation_id}"
        results[corr[props.correlation_id]] = int(body)
    return results


def test_rpc_with_exclusive_reply_queue(conn, rpc_server):
    ch = conn.channel()
    reply_q = ch.queue_declare("", exclusive=True).method.queue
    replies = []
    ch.basic_consume(reply_q, lambda c, m, p, b: replies.append((p, b)), auto_ack=True)
    numbers = list(range(1, 11))
    results = call_all(conn, ch, rpc_server.queue, reply_q, replies, numbers)
    assert results == {n: n * n for n in numbers}
    assert set(rpc_server.seen_reply_to) == {reply_q}


def test_rpc_with_direct_reply_to(conn, rpc_server):
    ch = conn.channel()
    replies = []
    ch.basic_consume(DIRECT_REPLY_TO, lambda c, m, p, b: replies.append((p, b)),
                     auto_ack=True)
    numbers = [3, 5, 7, 11]
    results = call_all(conn, ch, rpc_server.queue, DIRECT_REPLY_TO, replies, numbers)
    assert results == {n: n * n for n in numbers}
    # the server sees a per-channel pseudo queue name, not the literal one
    assert len(set(rpc_server.seen_reply_to)) == 1
    seen = rpc_server.seen_reply_to[0]
    assert seen.startswith(DIRECT_REPLY_TO + ".") and len(seen) > len(DIRECT_REPLY_TO) + 1


def test_direct_reply_to_name_is_per_channel(conn, connect, rpc_server):
    """A reply addressed to one channel's reply-to name does not reach another."""
    ch1 = conn.channel()
    got1 = []
    ch1.basic_consume(DIRECT_REPLY_TO, lambda c, m, p, b: got1.append(b), auto_ack=True)
    ch1.basic_publish("", rpc_server.queue, b"4", pika.BasicProperties(
        reply_to=DIRECT_REPLY_TO, correlation_id="c1"))
    wait_for(conn, lambda: got1, 15, "first reply")
    name1 = rpc_server.seen_reply_to[0]

    conn2 = connect()
    ch2 = conn2.channel()
    got2 = []
    ch2.basic_consume(DIRECT_REPLY_TO, lambda c, m, p, b: got2.append(b), auto_ack=True)
    ch2.basic_publish("", rpc_server.queue, b"6", pika.BasicProperties(
        reply_to=DIRECT_REPLY_TO, correlation_id="c2"))
    wait_for(conn2, lambda: got2, 15, "second reply")
    name2 = rpc_server.seen_reply_to[1]
    assert name1 != name2
    assert got1 == [b"16"] and got2 == [b"36"]


def test_direct_reply_to_publish_without_consumer_fails(conn, rpc_server):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.basic_publish("", rpc_server.queue, b"2", pika.BasicProperties(
            reply_to=DIRECT_REPLY_TO, correlation_id="x"))
    assert ei.value.reply_code == 406
    assert conn.is_open


def test_direct_reply_to_requires_no_ack(conn):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.basic_consume(DIRECT_REPLY_TO, lambda *a: None, auto_ack=False)
    assert ei.value.reply_code == 406
