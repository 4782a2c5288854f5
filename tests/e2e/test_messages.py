"""Message content: bodies split across frames, and properties round-trip."""

from __future__ import annotations

import datetime
import decimal
import hashlib
import os

import pika
import pytest

from amqp_helpers import get_all, wait_for


def frame_max(conn) -> int:
    return conn._impl.params.frame_max  # negotiated in connection.tune


def test_body_sizes_around_frame_boundaries(conn, ch, uniq):
    q = ch.queue_declare(uniq("q.sizes"), exclusive=True).method.queue
    payload_max = frame_max(conn) - 8   # frame header (7) + frame end (1)
    sizes = [0, 1, payload_max - 1, payload_max, payload_max + 1,
             2 * payload_max, 2 * payload_max + 1, 1_000_003]
    blobs = [os.urandom(n) for n in sizes]
    ch.confirm_delivery()
    for b in blobs:
        ch.basic_publish("", q, b)
    got = get_all(ch, q)
    assert [len(b) for _m, _p, b in got] == sizes
    for (_m, _p, body), sent in zip(got, blobs):
        assert body == sent


def test_large_message_5mib_round_trip(conn, ch, uniq):
    q = ch.queue_declare(uniq("q.large"), exclusive=True).method.queue
    body = os.urandom(5 * 1024 * 1024 + 17)
    digest = hashlib.sha256(body).hexdigest()
    ch.confirm_delivery()
    ch.basic_publish("", q, body, pika.BasicProperties(message_id=digest))
    # consume (push) it as well as get it, to exercise both delivery paths
    ch.basic_publish("", q, body[::-1], pika.BasicProperties(message_id="reversed"))
    m, props, got = ch.basic_get(q, auto_ack=True)
    assert len(got) == len(body)
    assert hashlib.sha256(got).hexdigest() == digest == props.message_id
    received = []
    cch = conn.channel()
    cch.basic_consume(q, lambda c, m, p, b: received.append(b), auto_ack=True)
    wait_for(conn, lambda: received, 30, "5 MiB delivery")
    assert received[0] == body[::-1]


# (pika cannot encode float field values; decimals cover the numeric case)
FULL_PROPS = dict(
    content_type="application/json",
    content_encoding="gzip",
    headers={
        "str": "héllo ✓ wörld",
        "empty_str": "",
        "int": 42,
        "negative": -7,
        "big": 2 ** 40 + 3,
        "true": True,
        "false": False,
        "none": None,
        "bytes": b"\x00\x01\xfe\xff",
        "decimal": decimal.Decimal("12.345"),
        "when": datetime.datetime(2024, 2, 29, 12, 34, 56),
        "list": [1, "two", decimal.Decimal("3.25"), True, None, [4, [5]], {"six": 6}],
        "empty_list": [],
        "nested": {"a": {"b": {"c": "deep", "n": [1, 2]}}, "empty": {}},
    },
    delivery_mode=2,
    priority=7,
    correlation_id="corr-123",
    reply_to="reply.queue",
    expiration="3600000",
    message_id="msg-uuid-1",
    timestamp=1_700_000_000,
    type="order.created",
    user_id="guest",
    app_id="ferrymq-e2e",
)


def typed(v):
    """A comparable form that keeps the AMQP type class (1 == True in Python)."""
    if isinstance(v, dict):
        return ("table", {k: typed(x) for k, x in v.items()})
    if isinstance(v, list):
        return ("array", [typed(x) for x in v])
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int):  # pika decodes 64-bit ints as an int subclass
        return ("int", int(v))
    return (type(v).__name__, v)


def assert_props_equal(got: pika.BasicProperties, sent: dict):
    for key, value in sent.items():
        assert getattr(got, key) == value, f"property {key}: sent {value!r}, got {getattr(got, key)!r}"
    assert typed(got.headers) == typed(sent["headers"])


@pytest.mark.parametrize("mode", ["get", "consume"])
def test_properties_round_trip(conn, ch, uniq, mode):
    q = ch.queue_declare(uniq("q.props"), exclusive=True).method.queue
    ch.confirm_delivery()
    ch.basic_publish("", q, b'{"x": 1}', pika.BasicProperties(**FULL_PROPS))
    ch.basic_publish("", q, b"bare")  # no properties at all
    if mode == "get":
        msgs = [(p, b) for _m, p, b in get_all(ch, q)]
    else:
        msgs = []
        ch.basic_consume(q, lambda c, m, p, b: msgs.append((p, b)), auto_ack=True)
        wait_for(conn, lambda: len(msgs) == 2, 10, "deliveries")
    (props, body), (bare_props, bare_body) = msgs
    assert body == b'{"x": 1}'
    assert_props_equal(props, FULL_PROPS)
    assert bare_body == b"bare"
    for key in FULL_PROPS:
        assert getattr(bare_props, key) is None, f"unexpected property {key} on a bare message"


def test_properties_round_trip_through_exchanges(ch, uniq):
    x = uniq("x.props")
    ch.exchange_declare(x, "topic", auto_delete=True)
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q1, x, "a.#")
    ch.queue_bind(q2, x, "#.b")
    ch.confirm_delivery()
    ch.basic_publish(x, "a.b", b"fan", pika.BasicProperties(**FULL_PROPS))
    for q in (q1, q2):
        (m, props, body), = get_all(ch, q)
        assert body == b"fan" and m.exchange == x and m.routing_key == "a.b"
        assert_props_equal(props, FULL_PROPS)


def test_user_id_must_match_authenticated_user_406(conn, uniq):
    ch = conn.channel()
    q = ch.queue_declare(uniq("q.uid"), exclusive=True).method.queue
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="mallory"))
    assert ei.value.reply_code == 406
    assert conn.is_open
