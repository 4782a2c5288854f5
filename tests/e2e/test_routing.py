"""Routing tables for fanout / direct / topic / headers exchanges and
exchange-to-exchange bindings.

Each case: an exchange type, a set of (queue label, binding key, binding args)
and a list of published messages with the exact set of queues that must get a
copy. Publishing uses publisher confirms, so once basic_publish returns the
message has been routed and enqueued; every queue is then drained with
basic.get and the observed routing is compared to the table (each queue must
get each message at most once, even when several of its bindings match).
"""

from __future__ import annotations

import pytest
import pika

from amqp_helpers import get_all

# (label, binding_key, binding_args)
B = tuple
# (routing_key, headers or None, expected labels)
M = tuple

CASES = {
    "fanout": ("fanout", [
        ("q1", "", None),
        ("q2", "anything", None),
        ("q3", "k1", None),
        ("q3", "k2", None),          # two bindings, still one copy
    ], [
        ("", None, {"q1", "q2", "q3"}),
        ("some.key", None, {"q1", "q2", "q3"}),
        ("k1", None, {"q1", "q2", "q3"}),
    ]),
    "direct": ("direct", [
        ("q1", "k1", None),
        ("q2", "k2", None),
        ("q3", "k1", None),
        ("q3", "k3", None),
        ("q4", "", None),
        ("q5", "a.*", None),         # no wildcards in direct exchanges
    ], [
        ("k1", None, {"q1", "q3"}),
        ("k2", None, {"q2"}),
        ("k3", None, {"q3"}),
        ("", None, {"q4"}),
        ("K1", None, set()),         # case sensitive
        ("k1.x", None, set()),
        ("a.b", None, set()),
        ("a.*", None, {"q5"}),
    ]),
    "topic_tutorial": ("topic", [
        ("q1", "*.orange.*", None),
        ("q2", "*.*.rabbit", None),
        ("q2", "lazy.#", None),
    ], [
        ("quick.orange.rabbit", None, {"q1", "q2"}),
        ("lazy.orange.elephant", None, {"q1", "q2"}),
        ("quick.orange.fox", None, {"q1"}),
        ("lazy.brown.fox", None, {"q2"}),
        ("lazy.pink.rabbit", None, {"q2"}),   # matches both bindings: one copy
        ("quick.brown.fox", None, set()),
        ("orange", None, set()),
        ("quick.orange.male.rabbit", None, set()),
        ("lazy.orange.male.rabbit", None, {"q2"}),
        ("lazy", None, {"q2"}),               # '#' matches zero words
    ]),
    "topic_hash_prefix": ("topic", [
        ("err", "#.error", None),
        ("mid", "a.#.b", None),
        ("any_b", "#.b.#", None),
    ], [
        ("error", None, {"err"}),             # '#.error' matches 'error'
        ("app.error", None, {"err"}),
        ("x.y.z.error", None, {"err"}),
        ("error.app", None, set()),
        ("errors", None, set()),
        ("my-error", None, set()),
        ("a.b", None, {"mid", "any_b"}),      # '#' in the middle: zero words
        ("a.x.b", None, {"mid", "any_b"}),
        ("a.x.y.b", None, {"mid", "any_b"}),
        ("a.b.c", None, {"any_b"}),
        ("b", None, {"any_b"}),
        ("ab", None, set()),
        ("a.bb", None, set()),
    ]),
    "topic_star": ("topic", [
        ("abc", "a.*.c", None),
        ("star", "*", None),
        ("two", "*.*", None),
        ("exact", "a.b", None),
        ("multi", "a.*", None),
        ("multi", "*.b", None),               # same queue, two matching bindings
    ], [
        ("a.b.c", None, {"abc"}),
        ("a.xyz.c", None, {"abc"}),
        ("a.c", None, {"multi", "two"}),
        ("a.b.b.c", None, set()),
        ("a..c", None, {"abc"}),              # '*' matches an empty word
        ("a", None, {"star"}),
        ("a.b", None, {"exact", "multi", "two"}),
        ("x.b", None, {"multi", "two"}),
        ("A.B", None, {"two"}),               # case sensitive
        ("a.b.c.d", None, set()),
        ("", None, set()),                    # '*' needs one word
    ]),
    "topic_hash_alone": ("topic", [
        ("all", "#", None),
        ("none_extra", "#.#", None),
        ("nothing", "a.b.c", None),
    ], [
        ("", None, {"all", "none_extra"}),
        ("a", None, {"all", "none_extra"}),
        ("a.b.c", None, {"all", "none_extra", "nothing"}),
        ("x.y.z.w.v", None, {"all", "none_extra"}),
    ]),
    "headers_all_any": ("headers", [
        ("all", "", {"x-match": "all", "format": "pdf", "type": "report"}),
        ("any", "", {"x-match": "any", "format": "pdf", "type": "log"}),
        ("default_all", "", {"format": "zip"}),   # no x-match means all
        ("routing_key_ignored", "pdf", {"x-match": "all", "format": "pdf"}),
    ], [
        ("", {"format": "pdf", "type": "report"}, {"all", "any", "routing_key_ignored"}),
        ("", {"format": "pdf", "type": "log"}, {"any", "routing_key_ignored"}),
        ("zzz", {"format": "pdf"}, {"any", "routing_key_ignored"}),
        ("", {"type": "log"}, {"any"}),
        ("", {"type": "report"}, set()),
        ("", {"format": "zip", "extra": "x"}, {"default_all"}),
        ("pdf", {"format": "PDF"}, set()),
        ("pdf", None, set()),
        ("", {"format": "pdf", "type": "report", "more": 1},
         {"all", "any", "routing_key_ignored"}),
    ]),
    "headers_types": ("headers", [
        ("int", "", {"x-match": "all", "count": 5}),
        ("presence", "", {"x-match": "all", "flag": None}),  # void: presence only
        ("str", "", {"x-match": "any", "name": "bob"}),
        ("empty_all", "", {"x-match": "all"}),               # matches every message
        ("empty_any", "", {"x-match": "any"}),               # matches no message
    ], [
        ("", {"count": 5}, {"int", "empty_all"}),
        ("", {"count": 2 ** 40 + 5}, {"empty_all"}),
        ("", {"count": "5"}, {"empty_all"}),                 # string is not int
        ("", {"count": 6}, {"empty_all"}),
        ("", {"flag": "anything"}, {"presence", "empty_all"}),
        ("", {"flag": 0}, {"presence", "empty_all"}),
        ("", {"name": "bob", "flag": True}, {"str", "presence", "empty_all"}),
        ("", {"name": "bobby"}, {"empty_all"}),
        ("", None, {"empty_all"}),
        ("", {}, {"empty_all"}),
    ]),
    "headers_x_args": ("headers", [
        # with all/any, binding arguments starting with x- are ignored
        ("all_ignores_x", "", {"x-match": "all", "x-tenant": "t1", "kind": "k"}),
        ("any_ignores_x", "", {"x-match": "any", "x-tenant": "t1"}),
        # with all-with-x/any-with-x, they count
        ("all_with_x", "", {"x-match": "all-with-x", "x-tenant": "t1", "kind": "k"}),
        ("any_with_x", "", {"x-match": "any-with-x", "x-tenant": "t1", "kind": "z"}),
    ], [
        ("", {"kind": "k"}, {"all_ignores_x"}),
        ("", {"kind": "k", "x-tenant": "t2"}, {"all_ignores_x"}),
        ("", {"kind": "k", "x-tenant": "t1"}, {"all_ignores_x", "all_with_x", "any_with_x"}),
        ("", {"x-tenant": "t1"}, {"any_with_x"}),
        ("", {"kind": "z"}, {"any_with_x"}),
        ("", {"x-tenant": "t2", "kind": "q"}, set()),
    ]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_routing_table(case, ch, uniq):
    xtype, bindings, messages = CASES[case]
    exchange = uniq(f"x.{case}")
    ch.exchange_declare(exchange, exchange_type=xtype, auto_delete=True)
    labels = sorted({label for label, _k, _a in bindings})
    queues = {}
    for label in labels:
        queues[label] = ch.queue_declare(uniq(f"q.{case}.{label}"), exclusive=True).method.queue
    for label, key, args in bindings:
        ch.queue_bind(queues[label], exchange, routing_key=key, arguments=args)

    ch.confirm_delivery()
    for i, (rk, headers, _expected) in enumerate(messages):
        ch.basic_publish(exchange, rk, f"m{i}".encode(),
                         pika.BasicProperties(headers=headers))

    got: dict[str, list[str]] = {}
    for label, q in queues.items():
        for _m, _p, body in get_all(ch, q):
            got.setdefault(body.decode(), []).append(label)

    mismatches = []
    for i, (rk, headers, expected) in enumerate(messages):
        observed = sorted(got.get(f"m{i}", []))
        if observed != sorted(expected):
            mismatches.append(
                f"routing_key={rk!r} headers={headers!r}: expected {sorted(expected)}, got {observed}")
    assert not mismatches, "\n".join(mismatches)


def test_exchange_to_exchange_bindings(ch, uniq):
    src = uniq("x.src")
    mid = uniq("x.mid")
    leaf = uniq("x.leaf")
    ch.exchange_declare(src, "topic", auto_delete=True)
    ch.exchange_declare(mid, "fanout", auto_delete=True)
    ch.exchange_declare(leaf, "direct", auto_delete=True)
    q_src = ch.queue_declare("", exclusive=True).method.queue
    q_mid = ch.queue_declare("", exclusive=True).method.queue
    q_leaf = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_src, src, "a.b")
    ch.exchange_bind(destination=mid, source=src, routing_key="a.*")
    ch.queue_bind(q_mid, mid, "ignored")
    # mid is fanout, leaf is direct: the original routing key is kept end to end
    ch.exchange_bind(destination=leaf, source=mid, routing_key="")
    ch.queue_bind(q_leaf, leaf, "a.c")
    ch.confirm_delivery()

    for rk in ["a.b", "a.c", "a.d", "b", "a.b.c"]:
        ch.basic_publish(src, rk, rk.encode())
    assert [b.decode() for _m, _p, b in get_all(ch, q_src)] == ["a.b"]
    assert [b.decode() for _m, _p, b in get_all(ch, q_mid)] == ["a.b", "a.c", "a.d"]
    leaf_msgs = get_all(ch, q_leaf)
    assert [b for _m, _p, b in leaf_msgs] == [b"a.c"]
    # delivery info names the exchange the message was published to
    assert leaf_msgs[0][0].exchange == src
    assert leaf_msgs[0][0].routing_key == "a.c"

    # unbinding src -> mid stops the flow through mid and leaf
    ch.exchange_unbind(destination=mid, source=src, routing_key="a.*")
    ch.basic_publish(src, "a.c", b"after-unbind")
    ch.basic_publish(src, "a.b", b"after-unbind-direct")
    assert get_all(ch, q_mid) == []
    assert get_all(ch, q_leaf) == []
    assert [b for _m, _p, b in get_all(ch, q_src)] == [b"after-unbind-direct"]


def test_exchange_binding_cycle_delivers_once(ch, uniq, cleanup):
    # bound to each other, auto-delete never fires: delete them explicitly
    x1 = cleanup.exchange(uniq("x.cyc1"))
    x2 = cleanup.exchange(uniq("x.cyc2"))
    ch.exchange_declare(x1, "fanout", auto_delete=True)
    ch.exchange_declare(x2, "fanout", auto_delete=True)
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    ch.exchange_bind(destination=x2, source=x1)
    ch.exchange_bind(destination=x1, source=x2)
    ch.queue_bind(q1, x1)
    ch.queue_bind(q2, x2)
    ch.queue_bind(q2, x1)  # reachable twice: still one copy
    ch.confirm_delivery()
    ch.basic_publish(x1, "", b"loop")
    ch.basic_publish(x2, "", b"loop2")
    assert [b for _m, _p, b in get_all(ch, q1)] == [b"loop", b"loop2"]
    assert [b for _m, _p, b in get_all(ch, q2)] == [b"loop", b"loop2"]


def test_default_exchange_routes_by_queue_name(ch, uniq):
    q = ch.queue_declare(uniq("q.default"), exclusive=True).method.queue
    ch.confirm_delivery()
    ch.basic_publish("", q, b"direct-to-queue")
    ch.basic_publish("", q + ".nope", b"lost")
    msgs = get_all(ch, q)
    assert [b for _m, _p, b in msgs] == [b"direct-to-queue"]
    assert msgs[0][0].exchange == ""
    assert msgs[0][0].routing_key == q


def test_publish_to_missing_exchange_closes_channel_404(conn, uniq):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.basic_publish(uniq("x.missing"), "rk", b"x")
    assert ei.value.reply_code == 404
    assert "NOT_FOUND" in ei.value.reply_text
    assert conn.is_open
    assert conn.channel().is_open


def test_exchange_declare_passive_missing_404(conn, uniq):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.exchange_declare(uniq("x.missing"), passive=True)
    assert ei.value.reply_code == 404
    assert ch.is_closed and conn.is_open


def test_exchange_redeclare_other_type_406(conn, uniq):
    ch = conn.channel()
    x = uniq("x.redecl")
    ch.exchange_declare(x, "direct", auto_delete=True)
    ch.exchange_declare(x, "direct", auto_delete=True)  # same: fine
    # keep the exchange alive while ch is closed by the broker
    keep = conn.channel()
    q = keep.queue_declare("", exclusive=True).method.queue
    keep.queue_bind(q, x, "k")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.exchange_declare(x, "topic", auto_delete=True)
    assert ei.value.reply_code == 406
    assert "PRECONDITION_FAILED" in ei.value.reply_text
    keep.exchange_delete(x)
