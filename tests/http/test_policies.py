"""Policies and operator policies: CRUD, checked before anything changes, durable, and
applied to running queues at once."""

import pika


def publish(amqp, queue, n):
    c = amqp()
    ch = c.channel()
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", queue, b"m%d" % i)
    c.close()


def test_policy_applies_to_a_running_queue_at_once(api, amqp):
    api.ok("PUT", "/api/queues/%2F/orders.eu", {})
    publish(amqp, "orders.eu", 5)
    assert api.ok("GET", "/api/queues/%2F/orders.eu")["messages"] == 5
    r = api.put("/api/policies/%2F/cap", {"pattern": "^orders\\.", "definition": {"max-length": 2},
                                          "priority": "1", "apply-to": "queues"})
    assert r.status_code == 201, r.text
    assert api.put("/api/policies/%2F/cap", {"pattern": "^orders\\.", "definition": {"max-length": 2},
                                              "priority": 1, "apply-to": "queues"}).status_code == 204
    # Drop-head at once on the running queue.
    deadline = 50
    while api.ok("GET", "/api/queues/%2F/orders.eu")["messages"] != 2 and deadline:
        deadline -= 1
        import time
        time.sleep(0.1)
    x = api.ok("GET", "/api/queues/%2F/orders.eu")
    assert x["messages"] == 2
    assert x["policy"] == "cap"
    assert x["effective_policy_definition"] == {"x-max-length": 2}
    got = api.ok("POST", "/api/queues/%2F/orders.eu/get", {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert [m["payload"] for m in got] == ["m3", "m4"]
    publish(amqp, "orders.eu", 3)
    assert api.ok("GET", "/api/queues/%2F/orders.eu")["messages"] == 2
    p = api.ok("GET", "/api/policies/%2F/cap")
    assert p == {"vhost": "/", "name": "cap", "pattern": "^orders\\.", "apply-to": "queues",
                 "definition": {"max-length": 2}, "priority": 1}
    assert p in api.ok("GET", "/api/policies") and p in api.ok("GET", "/api/policies/%2F")
    # Deleting the policy lifts the cap for new messages.
    assert api.delete("/api/policies/%2F/cap").status_code == 204
    assert api.get("/api/policies/%2F/cap").status_code == 404
    publish(amqp, "orders.eu", 3)
    x = api.ok("GET", "/api/queues/%2F/orders.eu")
    assert x["messages"] == 5 and x["policy"] is None


def test_policies_survive_restart(api, broker):
    api.ok("PUT", "/api/policies/%2F/ttl", {"pattern": ".*", "definition": {"message-ttl": 60000}})
    api.ok("PUT", "/api/operator-policies/%2F/op", {"pattern": ".*", "definition": {"max-length": 100}})
    broker.restart()
    from conftest import Api
    api2 = Api(broker.http_url)
    assert api2.ok("GET", "/api/policies/%2F/ttl")["definition"] == {"message-ttl": 60000}
    assert api2.ok("GET", "/api/operator-policies/%2F/op")["definition"] == {"max-length": 100}
    api2.ok("PUT", "/api/queues/%2F/any", {})
    x = api2.ok("GET", "/api/queues/%2F/any")
    assert x["policy"] == "ttl" and x["operator_policy"] == "op"


def test_bad_policies_change_nothing(api):
    for body in [{"pattern": "(", "definition": {"max-length": 1}},
                 {"pattern": ".*", "definition": {"no-such-key": 1}},
                 {"pattern": ".*", "definition": {}},
                 {"pattern": ".*"},
                 {"definition": {"max-length": 1}},
                 {"pattern": ".*", "definition": {"max-length": "lots"}},
                 {"pattern": ".*", "definition": {"max-length": 1}, "apply-to": "widgets"},
                 {"pattern": ".*", "definition": {"max-length": 1}, "priority": "high"}]:
        r = api.put("/api/policies/%2F/bad", body)
        assert r.status_code == 400, (body, r.text)
    assert api.get("/api/policies/%2F/bad").status_code == 404
    assert api.ok("GET", "/api/policies") == []
    r = api.put("/api/operator-policies/%2F/op", {"pattern": ".*", "definition": {"overflow": "drop-head"}})
    assert r.status_code == 400
    assert api.put("/api/policies/nope/p", {"pattern": ".*", "definition": {"max-length": 1}}).status_code == 404
