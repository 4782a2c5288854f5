"""Half messages (RocketMQ-style transactional messages over AMQP), with pika.

A publish carrying `x-transaction-id` is stored and confirmed but not routed; a publish
to `amq.ferrymq.transactions` (routing key = the id, header `x-transaction-action`)
commits (routes it as published) or rolls it back. See docs/half-messages.md."""

from __future__ import annotations

import random
import time

import pika
import pytest
import requests

from amqp_helpers import params_for, wait_for

TXN_EXCHANGE = "amq.ferrymq.transactions"


def persistent(headers=None, **kw):
    return pika.BasicProperties(delivery_mode=2, headers=headers, **kw)


def half(ch, queue, body, tid, exchange="", **extra):
    headers = {"x-transaction-id": tid, **extra}
    ch.basic_publish(exchange, queue, body, persistent(headers))


def decide(ch, tid, action, mandatory=False):
    ch.basic_publish(TXN_EXCHANGE, tid, b"",
                     persistent({"x-transaction-action": action}),
                     mandatory=mandatory)


def drain(ch, queue):
    out = []
    while True:
        m, p, b = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return out
        out.append((p, b))


def setup(conn, uniq, cleanup, **args):
    ch = conn.channel()
    ch.confirm_delivery()
    q = cleanup.queue(uniq("half"))
    ch.queue_declare(q, durable=True, arguments=args or None)
    return ch, q


def test_commit_routes_the_half_once(conn, uniq, cleanup):
    ch, q = setup(conn, uniq, cleanup)
    tid = uniq("t")
    half(ch, q, b"order-1", tid)  # confirmed: stored
    time.sleep(0.2)
    assert drain(ch, q) == [], "a half message is not routed before its commit"
    decide(ch, tid, "commit")
    got = drain(ch, q)
    assert [b for _, b in got] == [b"order-1"]
    assert got[0][0].headers["x-transaction-id"] == tid
    assert got[0][0].delivery_mode == 2
    # Deciding twice is harmless: no second copy, no return even when mandatory.
    decide(ch, tid, "commit", mandatory=True)
    decide(ch, tid, "rollback", mandatory=True)
    time.sleep(0.1)
    assert drain(ch, q) == []


def test_rollback_drops_and_later_commit_is_a_no_op(conn, uniq, cleanup):
    ch, q = setup(conn, uniq, cleanup)
    tid = uniq("t")
    half(ch, q, b"never", tid)
    decide(ch, tid, "rollback")
    decide(ch, tid, "commit", mandatory=True)
    decide(ch, tid, "rollback")
    time.sleep(0.2)
    assert drain(ch, q) == []
    assert ch.is_open


def test_several_halves_in_one_transaction_commit_in_order(conn, uniq, cleanup):
    ch, q = setup(conn, uniq, cleanup)
    tid = uniq("t")
    for i in range(5):
        half(ch, q, b"part-%d" % i, tid)
    decide(ch, tid, "commit")
    assert [b for _, b in drain(ch, q)] == [b"part-%d" % i for i in range(5)]


def test_commit_routes_through_bindings_as_they_are_then(conn, uniq, cleanup):
    ch, q = setup(conn, uniq, cleanup)
    x = cleanup.exchange(uniq("x"))
    ch.exchange_declare(x, "direct", durable=True)
    tid = uniq("t")
    half(ch, "rk", b"late-binding", tid, exchange=x)
    ch.queue_bind(q, x, "rk")  # bound after the half was stored
    decide(ch, tid, "commit")
    got = drain(ch, q)
    assert [b for _, b in got] == [b"late-binding"]


def test_unroutable_commit_is_returned_when_mandatory(conn, uniq, cleanup):
    ch = conn.channel()
    ch.confirm_delivery()
    x = cleanup.exchange(uniq("x"))
    ch.exchange_declare(x, "direct", durable=True)
    tid = uniq("t")
    half(ch, "nowhere", b"lost", tid, exchange=x)
    with pytest.raises(pika.exceptions.UnroutableError):
        decide(ch, tid, "commit", mandatory=True)


def test_unknown_id_is_returned_when_mandatory(conn, uniq):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as e:
        decide(ch, uniq("unknown"), "commit", mandatory=True)
    assert e.value.messages[0].method.reply_code == 312
    decide(ch, uniq("unknown"), "rollback")  # not mandatory: silently confirmed
    assert ch.is_open


@pytest.mark.parametrize("headers", [{"x-transaction-action": "maybe"}, {}, None])
def test_bad_action_is_a_precondition_failed_channel_error(connect, headers):
    c = connect()
    ch = c.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish(TXN_EXCHANGE, "t", b"", pika.BasicProperties(headers=headers))
        ch.queue_declare("", exclusive=True)  # a round trip that sees the close
    assert e.value.reply_code == 406
    assert c.is_open, "other channels and the connection are unaffected"
    c.channel().queue_declare("", exclusive=True)


def test_half_to_a_missing_exchange_is_not_found(connect, uniq):
    c = connect()
    ch = c.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        half(ch, "rk", b"x", uniq("t"), exchange=uniq("missing"))
    assert e.value.reply_code == 404


def test_the_transactions_exchange_is_broker_owned(connect):
    c = connect()
    ch = c.channel()
    ch.exchange_declare(TXN_EXCHANGE, "direct", passive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.exchange_delete(TXN_EXCHANGE)
    assert e.value.reply_code == 403
    ch = c.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.exchange_declare(TXN_EXCHANGE, "topic", durable=True)
    assert e.value.reply_code in (403, 406)


def test_check_back_answered(conn, uniq, cleanup):
    ch, q = setup(conn, uniq, cleanup)
    cq = cleanup.queue(uniq("checks"))
    ch.queue_declare(cq, durable=True)
    tid = uniq("t")
    half(ch, q, b"needs-a-check", tid, **{
        "x-transaction-check-queue": cq,
        "x-transaction-check-after": 200,
    })
    checks = []

    def on_check(c, method, props, body):
        checks.append((props.headers, body))
        c.basic_ack(method.delivery_tag)
        # The producer checks its local transaction and decides.
        decide(c, props.headers["x-transaction-id"], "commit")

    consumer = conn.channel()
    consumer.confirm_delivery()
    consumer.basic_consume(cq, on_check)
    wait_for(conn, lambda: checks, timeout=5, what="a check message")
    h, body = checks[0]
    assert h["x-transaction-id"] == tid
    assert h["x-transaction-check-count"] == 1
    assert h["x-original-routing-key"] == q
    assert h["x-original-exchange"] == ""
    assert body == b"needs-a-check"
    got = wait_for(conn, lambda: drain(ch, q), timeout=5, what="the committed message")
    assert [b for _, b in got] == [b"needs-a-check"]
    time.sleep(0.5)
    assert len(checks) == 1, "no more checks after the decision"


def test_check_back_exhausted_rolls_back_and_dead_letters(conn, uniq, cleanup):
    ch, q = setup(conn, uniq, cleanup)
    dlx = cleanup.exchange(uniq("dlx"))
    ch.exchange_declare(dlx, "fanout", durable=True)
    dlq = cleanup.queue(uniq("dlq"))
    ch.queue_declare(dlq, durable=True)
    ch.queue_bind(dlq, dlx)
    cq = cleanup.queue(uniq("checks"))
    ch.queue_declare(cq, durable=True, arguments={"x-dead-letter-exchange": dlx})
    tid = uniq("t")
    half(ch, q, b"undecided", tid, **{
        "x-transaction-check-queue": cq,
        "x-transaction-check-after": 100,
        "x-transaction-max-checks": 2,
    })
    dead = wait_for(conn, lambda: drain(ch, dlq), timeout=5, what="the dead letter")
    assert [b for _, b in dead] == [b"undecided"]
    h = dead[0][0].headers
    assert h["x-first-death-reason"] == "transaction_expired"
    assert h["x-first-death-queue"] == cq
    death = h["x-death"][0]
    assert death["reason"] == "transaction_expired"
    assert death["queue"] == cq
    assert death["count"] == 1
    checks = drain(ch, cq)
    assert [p.headers["x-transaction-check-count"] for p, _ in checks] == [1, 2]
    # Expired means rolled back: a late commit routes nothing.
    decide(ch, tid, "commit", mandatory=True)
    time.sleep(0.2)
    assert drain(ch, q) == []


def test_many_interleaved_transactions(conn, uniq, cleanup):
    ch, q = setup(conn, uniq, cleanup)
    prefix = uniq("m")
    n = 1000
    # Halves and decisions interleave on two channels: a window of open transactions.
    dch = conn.channel()
    dch.confirm_delivery()
    order = list(range(n))
    random.Random(7).shuffle(order)
    open_ids = []
    for i in range(n):
        half(ch, q, b"%d" % i, f"{prefix}.{i}")
        open_ids.append(i)
        if len(open_ids) >= 50 or i == n - 1:
            random.Random(i).shuffle(open_ids)
            for j in open_ids:
                decide(dch, f"{prefix}.{j}", "commit" if j % 2 == 0 else "rollback")
            open_ids.clear()
    got = sorted(int(b) for _, b in drain(ch, q))
    assert got == list(range(0, n, 2))


def vhost_half_count(b):
    r = requests.get(f"{b.http_url}/api/vhosts/%2F", auth=("guest", "guest"), timeout=5)
    r.raise_for_status()
    return r.json()["messages_half"]


def test_halves_survive_kill9_and_are_counted(private_broker):
    b = private_broker(http=True)
    c = pika.BlockingConnection(params_for(b.url))
    ch = c.channel()
    ch.confirm_delivery()
    ch.queue_declare("k9.target", durable=True)
    ch.queue_declare("k9.checks", durable=True)
    half(ch, "k9.target", b"commit-me", "t-commit")
    half(ch, "k9.target", b"roll-me-back", "t-rollback")
    half(ch, "k9.target", b"checked", "t-checked", **{
        "x-transaction-check-queue": "k9.checks",
        "x-transaction-check-after": 300,
    })
    assert vhost_half_count(b) == 3
    b.kill9()
    b.start()
    assert vhost_half_count(b) == 3
    c = pika.BlockingConnection(params_for(b.url))
    ch = c.channel()
    ch.confirm_delivery()
    def ready(q):
        return ch.queue_declare(q, durable=True, passive=True).method.message_count

    assert ready("k9.target") == 0
    decide(ch, "t-commit", "commit")
    decide(ch, "t-rollback", "rollback")
    assert ready("k9.target") == 1  # decisions are confirmed once applied and stored
    # The check schedule survived too.
    checks = wait_for(c, lambda: drain(ch, "k9.checks"), timeout=5, what="a check")
    assert checks[0][0].headers["x-transaction-id"] == "t-checked"
    decide(ch, "t-checked", "rollback")
    wait_for(c, lambda: vhost_half_count(b) == 0, timeout=5, what="no halves left")
    prom = requests.get(f"{b.prometheus_url}/metrics", timeout=5).text
    assert "ferrymq_half_messages 0" in prom
    c.close()
    # Decided transactions stay decided across another crash: exactly once.
    b.kill9()
    b.start()
    c = pika.BlockingConnection(params_for(b.url))
    ch = c.channel()
    assert [bd for _, bd in drain(ch, "k9.target")] == [b"commit-me"]
    assert vhost_half_count(b) == 0
    c.close()
