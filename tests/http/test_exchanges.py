"""Exchanges: declare (strings, kombu's `"arguments": []`), show, list, delete, publish."""

import pika

from conftest import wait_until

NG_EXCHANGE_FIELDS = ["name", "vhost", "type", "durable", "auto_delete", "arguments"]


def test_declare_show_list_delete(api):
    r = api.put("/api/exchanges/%2F/x1", {"type": "topic", "durable": "true", "auto_delete": "false",
                                          "internal": "false", "arguments": {}})
    assert r.status_code == 201
    assert api.put("/api/exchanges/%2F/x1", {"type": "topic"}).status_code == 204
    assert api.put("/api/exchanges/%2F/x1", {"type": "fanout"}).status_code == 400
    x = api.ok("GET", "/api/exchanges/%2F/x1")
    for k in NG_EXCHANGE_FIELDS + ["internal"]:
        assert k in x
    assert (x["type"], x["durable"], x["internal"]) == ("topic", True, False)
    names = [e["name"] for e in api.ok("GET", "/api/exchanges/%2F")]
    assert {"", "amq.direct", "amq.topic", "x1"} <= set(names)
    for e in api.ok("GET", "/api/exchanges"):
        for k in NG_EXCHANGE_FIELDS:
            assert k in e
    assert api.ok("GET", "/api/exchanges/%2F/amq.default")["name"] == ""
    assert api.delete("/api/exchanges/%2F/x1").status_code == 204
    assert api.get("/api/exchanges/%2F/x1").status_code == 404
    assert api.delete("/api/exchanges/%2F/x1").status_code == 404


def test_kombu_empty_list_arguments_and_bad_types(api):
    assert api.put("/api/exchanges/%2F/kx", {"type": "direct", "arguments": []}).status_code == 201
    assert api.put("/api/exchanges/%2F/bad", {"type": "nope"}).status_code == 400
    assert api.put("/api/exchanges/%2F/bad", {"durable": True}).status_code == 400
    assert api.put("/api/exchanges/%2F/bad", {"type": "direct", "durable": "maybe"}).status_code == 400
    assert api.get("/api/exchanges/%2F/bad").status_code == 404
    assert api.put("/api/exchanges/%2F/amq.mine", {"type": "direct"}).status_code == 400
    assert api.delete("/api/exchanges/%2F/amq.direct").status_code == 401


def test_delete_if_unused(api):
    api.ok("PUT", "/api/exchanges/%2F/used", {"type": "fanout"})
    api.ok("PUT", "/api/queues/%2F/uq", {})
    api.ok("POST", "/api/bindings/%2F/e/used/q/uq", {"routing_key": ""})
    assert api.delete("/api/exchanges/%2F/used?if-unused=true").status_code == 400
    assert api.delete("/api/exchanges/%2F/used").status_code == 204


def test_delayed_and_dedup_exchanges_show_their_state(api):
    api.ok("PUT", "/api/exchanges/%2F/later", {"type": "x-delayed-message",
                                               "arguments": {"x-delayed-type": "direct"}})
    x = api.ok("GET", "/api/exchanges/%2F/later")
    assert x["x_delayed_pending"] == 0
    api.ok("PUT", "/api/queues/%2F/lq", {})
    api.ok("POST", "/api/bindings/%2F/e/later/q/lq", {"routing_key": "k"})
    r = api.ok("POST", "/api/exchanges/%2F/later/publish",
               {"routing_key": "k", "properties": {"headers": {"x-delay": 60000}},
                "payload": "soon", "payload_encoding": "string"})
    assert r == {"routed": True}
    wait_until(lambda: api.ok("GET", "/api/exchanges/%2F/later")["x_delayed_pending"] == 1,
               what="the delayed message to be held")
    api.ok("PUT", "/api/exchanges/%2F/once", {"type": "x-message-deduplication",
                                              "arguments": {"x-cache-size": 10}})
    assert api.ok("GET", "/api/exchanges/%2F/once")["x_deduplication_cache_size"] == 0


def test_publish_routed_and_not(api, amqp):
    api.ok("PUT", "/api/queues/%2F/pq", {})
    r = api.ok("POST", "/api/exchanges/%2F/amq.default/publish",
               {"routing_key": "pq", "properties": {"delivery_mode": 2, "content_type": "text/plain",
                                                      "headers": {"a": 1}},
                "payload": "hi", "payload_encoding": "string"})
    assert r == {"routed": True}
    r = api.ok("POST", "/api/exchanges/%2F/amq.default/publish",
               {"routing_key": "nowhere", "properties": {}, "payload": "aGk=", "payload_encoding": "base64"})
    assert r == {"routed": False}
    c = amqp()
    ch = c.channel()
    m, p, body = ch.basic_get("pq", auto_ack=True)
    assert body == b"hi"
    assert p.content_type == "text/plain" and p.delivery_mode == 2 and p.headers == {"a": 1}
    # All four keys are required; bad encodings and missing exchanges.
    base = {"routing_key": "pq", "properties": {}, "payload": "x", "payload_encoding": "string"}
    for k in base:
        body = dict(base)
        del body[k]
        assert api.post("/api/exchanges/%2F/amq.default/publish", body).status_code == 400, k
    assert api.post("/api/exchanges/%2F/amq.default/publish", dict(base, payload_encoding="hex")).status_code == 400
    assert api.post("/api/exchanges/%2F/amq.default/publish", dict(base, payload="%%", payload_encoding="base64")).status_code == 400
    assert api.post("/api/exchanges/%2F/missing/publish", base).status_code == 404
    assert api.post("/api/exchanges/%2F/amq.default/publish", dict(base, properties={"delivery_mode": 7})).status_code == 400


def test_publish_nack_is_400(api):
    api.ok("PUT", "/api/queues/%2F/full", {"arguments": {"x-max-length": 1, "x-overflow": "reject-publish"}})
    msg = {"routing_key": "full", "properties": {}, "payload": "x", "payload_encoding": "string"}
    assert api.ok("POST", "/api/exchanges/%2F/amq.default/publish", msg) == {"routed": True}
    r = api.post("/api/exchanges/%2F/amq.default/publish", msg)
    assert r.status_code == 400, r.text
    assert api.ok("GET", "/api/queues/%2F/full")["messages"] == 1
