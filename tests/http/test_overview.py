"""Overview, nodes, health checks and the aliveness test."""

import pika


def test_overview_fields_are_integers(api, amqp):
    c = amqp()
    ch = c.channel()
    ch.queue_declare("ov")
    ch.confirm_delivery()
    for _ in range(3):
        ch.basic_publish("", "ov", b"x")
    o = api.ok("GET", "/api/overview")
    for k in ["rabbitmq_version", "management_version", "cluster_name", "erlang_version",
              "node", "rates_mode", "exchange_types", "product_name"]:
        assert k in o, k
    qt = o["queue_totals"]
    assert qt["messages"] == 3 and type(qt["messages"]) is int
    assert qt["messages_ready"] == 3 and qt["messages_unacknowledged"] == 0
    ot = o["object_totals"]
    assert ot["connections"] == 1 and ot["channels"] == 1
    assert ot["queues"] == 1 and ot["exchanges"] >= 6 and ot["consumers"] == 0
    assert all(type(v) is int for v in ot.values())
    ms = o["message_stats"]
    assert ms["publish"] == 3 and ms["confirm"] == 3
    assert isinstance(ms["publish_details"]["rate"], float)
    protocols = {l["protocol"] for l in o["listeners"]}
    assert {"amqp", "http", "kafka"} <= protocols


def test_overview_sample_series(api):
    o = api.ok("GET", "/api/overview?lengths_age=60&lengths_incr=5&msg_rates_age=60&msg_rates_incr=5")
    d = o["queue_totals"]["messages_details"]
    assert "samples" in d and "avg" in d and "avg_rate" in d
    assert d["samples"][0]["sample"] == 0 and "timestamp" in d["samples"][0]
    assert "samples" in o["message_stats"]["publish_details"]


def test_nodes(api):
    nodes = api.ok("GET", "/api/nodes")
    assert len(nodes) == 1
    n = nodes[0]
    for k in ["name", "running", "uptime", "mem_used", "mem_limit", "mem_alarm", "disk_free",
              "disk_free_limit", "disk_free_alarm", "fd_used", "fd_total", "being_drained"]:
        assert k in n, k
    assert n["running"] is True and n["mem_used"] > 0 and n["fd_used"] > 0
    assert api.ok("GET", "/api/nodes/" + n["name"])["name"] == n["name"]
    assert api.get("/api/nodes/rabbit@nowhere").status_code == 404
    assert api.ok("GET", "/api/cluster-name")["name"] == n["name"]


def test_health_checks(api, broker):
    for path in ["alarms", "local-alarms", "virtual-hosts", "is-in-service",
                 "node-is-quorum-critical", "protocol-listener/amqp"]:
        assert api.ok("GET", "/api/health/checks/" + path)["status"] == "ok", path
    assert api.ok("GET", f"/api/health/checks/port-listener/{broker.port}")["status"] == "ok"
    r = api.get("/api/health/checks/port-listener/1")
    assert r.status_code == 503
    assert r.json()["status"] == "failed" and "reason" in r.json()
    assert api.get("/api/health/checks/port-listener/x").status_code == 400


def test_aliveness(api):
    assert api.ok("GET", "/api/aliveness-test/%2F") == {"status": "ok"}
    assert api.get("/api/aliveness-test/nope").status_code == 404
    # Nothing left behind in the queue.
    assert api.ok("GET", "/api/queues/%2F/aliveness-test")["messages"] == 0


def test_unknown_paths_and_methods(api):
    r = api.get("/api/nothing-here")
    assert r.status_code == 404
    assert r.json() == {"error": "Object Not Found", "reason": "Not Found"}
    assert api.request("PATCH", "/api/overview").status_code == 405
