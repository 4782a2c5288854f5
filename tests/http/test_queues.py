"""Queues: the fields KEDA, Flower, rabbitmqadmin-ng and Terraform read; declare, delete,
purge, get in all four ack modes; lists with paging, filtering, sorting and columns."""

import base64
import time

import pika
import pytest

from conftest import q

NG_QUEUE_FIELDS = ["name", "vhost", "type", "durable", "auto_delete", "exclusive", "arguments"]


def publish(amqp, queue, bodies, declare=True, props=None):
    c = amqp()
    ch = c.channel()
    if declare:
        ch.queue_declare(queue)
    ch.confirm_delivery()
    for b in bodies:
        ch.basic_publish("", queue, b, props)
    c.close()


def test_keda_counts_are_integers_and_rates_numbers(api, amqp):
    publish(amqp, "q", [b"m%d" % i for i in range(5)])
    c = amqp()
    ch = c.channel()
    ch.basic_qos(prefetch_count=2)
    got = []
    ch.basic_consume("q", lambda ch_, m, p, b: got.append(m))
    while len(got) < 2:
        c.process_data_events(time_limit=0.1)
    time.sleep(0.2)
    x = api.ok("GET", "/api/queues/%2F/q")
    assert (x["messages"], x["messages_ready"], x["messages_unacknowledged"]) == (5, 3, 2)
    assert all(type(x[k]) is int for k in ["messages", "messages_ready", "messages_unacknowledged", "consumers"])
    assert x["consumers"] == 1
    ms = x["message_stats"]
    assert isinstance(ms["publish_details"]["rate"], float)
    assert isinstance(ms["deliver_get_details"]["rate"], float)
    assert ms["publish"] == 5 and ms["deliver_get"] == 2
    # KEDA's regex form.
    page = api.ok("GET", "/api/queues/%2F?page=1&use_regex=true&pagination=false&name=%5Eq%24&page_size=100")
    assert page["page_count"] == 1
    assert page["items"][0]["name"] == "q"
    assert type(page["items"][0]["messages"]) is int


def test_exact_counts_from_the_first_moment(api, amqp):
    publish(amqp, "fresh", [b"a", b"b"])
    x = api.ok("GET", "/api/queues/%2F/fresh")
    assert x["messages"] == 2 and x["messages_ready"] == 2


def test_flower_unencoded_default_vhost(api, amqp):
    publish(amqp, "celery", [b"t"])
    items = api.ok("GET", "/api/queues//")
    assert isinstance(items, list)
    item = next(i for i in items if i["name"] == "celery")
    for k in ["messages", "messages_unacknowledged", "messages_ready", "consumers"]:
        assert type(item[k]) is int
    assert api.ok("GET", "/api/queues//celery")["messages"] == 1


def test_ng_and_terraform_fields(api):
    assert api.put("/api/queues/%2F/tf", {"durable": True, "auto_delete": False,
                                          "arguments": {"x-max-length": 10, "x-message-ttl": 1000}}).status_code == 201
    x = api.ok("GET", "/api/queues/%2F/tf")
    for k in NG_QUEUE_FIELDS + ["node", "state", "policy", "consumers", "messages"]:
        assert k in x, k
    assert x["type"] == "classic" and x["durable"] is True
    # Argument types round-trip.
    assert x["arguments"] == {"x-max-length": 10, "x-message-ttl": 1000}
    for item in api.ok("GET", "/api/queues"):
        for k in NG_QUEUE_FIELDS:
            assert k in item


def test_declare_with_strings_then_again_then_inequivalent(api):
    r = api.put("/api/queues/%2F/q", {"durable": "true", "auto_delete": "false", "arguments": {}})
    assert r.status_code == 201 and r.content == b""
    assert api.put("/api/queues/%2F/q", {"durable": "true", "auto_delete": "false"}).status_code == 204
    r = api.put("/api/queues/%2F/q", {"durable": "false"})
    assert r.status_code == 400
    assert r.json()["error"] == "bad_request"
    assert "inequivalent" in r.json()["reason"]
    # Quorum through x-queue-type and through "type".
    assert api.put("/api/queues/%2F/qq", {"arguments": {"x-queue-type": "quorum"}}).status_code == 201
    assert api.ok("GET", "/api/queues/%2F/qq")["type"] == "quorum"
    assert api.put("/api/queues/%2F/qq2", {"type": "quorum"}).status_code == 201
    assert api.ok("GET", "/api/queues/%2F/qq2")["type"] == "quorum"


def test_delete_conditions_and_purge(api, amqp):
    publish(amqp, "d", [b"1", b"2"])
    assert api.delete("/api/queues/%2F/d?if-empty=true").status_code == 400
    assert api.ok("GET", "/api/queues/%2F/d")["messages"] == 2
    assert api.delete("/api/queues/%2F/d/contents").status_code == 204
    assert api.ok("GET", "/api/queues/%2F/d")["messages"] == 0
    assert api.delete("/api/queues/%2F/d?if-empty=true").status_code == 204
    assert api.get("/api/queues/%2F/d").status_code == 404
    assert api.delete("/api/queues/%2F/d").status_code == 404
    assert api.delete("/api/queues/%2F/d/contents").status_code == 404


def test_get_ackmodes_and_encodings(api, amqp):
    props = pika.BasicProperties(content_type="text/plain", headers={"h": "v"}, delivery_mode=2)
    publish(amqp, "g", [b"hello", b"\xff\xfe"], props=props)
    # ack_requeue_true (classic rabbitmqadmin's form, strings) leaves them, redelivered.
    got = api.ok("POST", "/api/queues/%2F/g/get", {"count": "5", "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert [m["payload"] for m in got] == ["hello", base64.b64encode(b"\xff\xfe").decode()]
    assert [m["payload_encoding"] for m in got] == ["string", "base64"]
    m = got[0]
    for k in ["payload_bytes", "redelivered", "exchange", "routing_key", "message_count",
              "properties", "payload", "payload_encoding"]:
        assert k in m
    assert m["payload_bytes"] == 5 and m["routing_key"] == "g" and m["exchange"] == ""
    assert m["message_count"] == 1 and m["redelivered"] is False
    assert m["properties"]["content_type"] == "text/plain"
    assert m["properties"]["headers"] == {"h": "v"}
    assert m["properties"]["delivery_mode"] == 2
    assert api.ok("GET", "/api/queues/%2F/g")["messages"] == 2
    got = api.ok("POST", "/api/queues/%2F/g/get", {"count": 1, "ackmode": "reject_requeue_true", "encoding": "base64"})
    assert got[0]["payload"] == base64.b64encode(b"hello").decode()
    assert got[0]["redelivered"] is True
    assert api.ok("GET", "/api/queues/%2F/g")["messages"] == 2
    # truncate
    got = api.ok("POST", "/api/queues/%2F/g/get", {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 2})
    assert got[0]["payload"] == "he" and got[0]["payload_bytes"] == 5
    got = api.ok("POST", "/api/queues/%2F/g/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert got[0]["payload"] == "hello"
    assert api.ok("GET", "/api/queues/%2F/g")["messages"] == 1
    got = api.ok("POST", "/api/queues/%2F/g/get", {"count": 1, "ackmode": "reject_requeue_false", "encoding": "auto"})
    assert len(got) == 1
    assert api.ok("GET", "/api/queues/%2F/g")["messages"] == 0
    assert api.ok("POST", "/api/queues/%2F/g/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}) == []
    for bad in [{"count": 1, "ackmode": "eat", "encoding": "auto"},
                {"count": 1, "ackmode": "ack_requeue_false", "encoding": "hex"},
                {"count": "x", "ackmode": "ack_requeue_false", "encoding": "auto"},
                {"ackmode": "ack_requeue_false", "encoding": "auto"}]:
        assert api.post("/api/queues/%2F/g/get", bad).status_code == 400, bad
    assert api.post("/api/queues/%2F/none/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}).status_code == 404


def test_reject_requeue_false_dead_letters(api, amqp):
    api.ok("PUT", "/api/queues/%2F/dlq", {})
    api.ok("PUT", "/api/queues/%2F/src", {"arguments": {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}})
    publish(amqp, "src", [b"x"], declare=False)
    api.ok("POST", "/api/queues/%2F/src/get", {"count": 1, "ackmode": "reject_requeue_false", "encoding": "auto"})
    # Dead-lettering is asynchronous (one queue hands the message to another), in RabbitMQ
    # too: the dead letter arrives shortly after the reject.
    deadline = time.monotonic() + 10
    got = []
    while not got and time.monotonic() < deadline:
        got = api.ok("POST", "/api/queues/%2F/dlq/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})
        if not got:
            time.sleep(0.05)
    assert got, "the rejected message never reached the dead-letter queue"
    assert got[0]["payload"] == "x"
    assert "x-death" in got[0]["properties"]["headers"]


def test_paging_filtering_sorting_columns(api):
    for i in range(7):
        api.ok("PUT", f"/api/queues/%2F/page.{i}", {})
    api.ok("PUT", "/api/queues/%2F/Other", {})
    r = api.ok("GET", "/api/queues/%2F?page=2&page_size=3&name=page&sort=name&sort_reverse=true")
    assert r["filtered_count"] == 7 and r["total_count"] == 8
    assert r["page"] == 2 and r["page_count"] == 3 and r["page_size"] == 3
    assert [i["name"] for i in r["items"]] == ["page.3", "page.2", "page.1"]
    assert r["item_count"] == 3
    r = api.ok("GET", "/api/queues?columns=name,messages&sort=name")
    assert r[0] == {"name": "Other", "messages": 0}
    assert api.get("/api/queues?page=1&page_size=501").status_code == 400
    assert api.get("/api/queues?page=0").status_code == 400
    assert api.get("/api/queues?page=1&use_regex=true&name=(").status_code == 400
    # name filters only when paged (RabbitMQ).
    assert len(api.ok("GET", "/api/queues?name=page")) == 8


def test_unknown_vhost(api):
    assert api.get("/api/queues/nope").status_code == 404
    assert api.get("/api/queues/nope/q").status_code == 404
    assert api.put("/api/queues/nope/q", {}).status_code == 404


@pytest.mark.parametrize("name", ["a/b", "100%", "ключ", "sp ace", "a+b", "~t"])
def test_names_with_slash_percent_unicode(api, name):
    assert api.put(f"/api/queues/%2F/{q(name)}", {}).status_code == 201
    x = api.ok("GET", f"/api/queues/%2F/{q(name)}")
    assert x["name"] == name
    assert name in [i["name"] for i in api.ok("GET", "/api/queues/%2F")]
    assert api.delete(f"/api/queues/%2F/{q(name)}").status_code == 204
