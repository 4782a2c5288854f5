"""Connections, channels and consumers from the engine's registry; closing a connection
through the API (320 CONNECTION_FORCED - Closed via management plugin)."""

import time

import pika
import pytest

from conftest import Api, q, wait_until

NG_CONNECTION_FIELDS = ["name", "node", "protocol", "user", "connected_at", "client_properties"]
NG_CHANNEL_FIELDS = ["number", "name", "connection_details", "vhost", "state", "consumer_count",
                     "confirm", "prefetch_count", "messages_unacknowledged", "messages_unconfirmed"]


def test_connection_channel_consumer_listing(api, amqp):
    c = amqp(connection_name="orders-worker", product="test-suite")
    ch = c.channel()
    ch.basic_qos(prefetch_count=7)
    ch.confirm_delivery()
    ch.queue_declare("cq")
    ch.basic_publish("", "cq", b"x")
    ch.basic_consume("cq", lambda *a: None, consumer_tag="ctag-1")
    c.process_data_events(time_limit=0.3)
    conns = wait_until(lambda: api.ok("GET", "/api/connections"), what="a connection")
    assert len(conns) == 1
    x = conns[0]
    for k in NG_CONNECTION_FIELDS + ["vhost", "peer_host", "peer_port", "host", "port", "channels",
                                     "ssl", "frame_max", "timeout", "recv_oct", "send_oct", "state"]:
        assert k in x, k
    assert x["protocol"] == "AMQP 0-9-1" and x["user"] == "guest" and x["vhost"] == "/"
    assert x["client_properties"]["connection_name"] == "orders-worker"
    assert x["client_properties"]["product"] == "test-suite"
    assert x["channels"] == 1 and x["ssl"] is False
    assert type(x["recv_oct"]) is int and x["recv_oct"] > 0
    assert x["name"] == f"{x['peer_host']}:{x['peer_port']} -> {x['host']}:{x['port']}"
    assert api.ok("GET", "/api/connections/" + q(x["name"]))["name"] == x["name"]
    assert len(api.ok("GET", "/api/vhosts/%2F/connections")) == 1
    chans = api.ok("GET", "/api/channels")
    assert len(chans) == 1
    chan = chans[0]
    for k in NG_CHANNEL_FIELDS:
        assert k in chan, k
    assert chan["number"] == 1 and chan["prefetch_count"] == 7 and chan["confirm"] is True
    assert chan["consumer_count"] == 1 and chan["messages_unacknowledged"] == 1
    assert chan["connection_details"]["name"] == x["name"]
    assert chan["message_stats"]["publish"] == 1 and chan["message_stats"]["confirm"] == 1
    assert api.ok("GET", "/api/channels/" + q(chan["name"]))["number"] == 1
    assert len(api.ok("GET", "/api/connections/" + q(x["name"]) + "/channels")) == 1
    cons = api.ok("GET", "/api/consumers/%2F")
    assert len(cons) == 1
    k = cons[0]
    assert k["consumer_tag"] == "ctag-1" and k["queue"] == {"name": "cq", "vhost": "/"}
    assert k["ack_required"] is True and k["prefetch_count"] == 7
    assert k["channel_details"]["connection_name"] == x["name"]
    assert api.ok("GET", "/api/consumers") == cons
    assert api.ok("GET", "/api/queues/%2F/cq")["consumers"] == 1
    ch.basic_cancel("ctag-1")
    c.process_data_events(time_limit=0.2)
    assert api.ok("GET", "/api/consumers") == []


def test_delete_closes_with_320(api, amqp):
    c = amqp()
    ch = c.channel()
    name = wait_until(lambda: api.ok("GET", "/api/connections"))[0]["name"]
    assert api.delete("/api/connections/" + q(name)).status_code == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        for _ in range(100):
            c.process_data_events(time_limit=0.05)
    assert e.value.reply_code == 320
    assert e.value.reply_text == "CONNECTION_FORCED - Closed via management plugin"
    wait_until(lambda: api.ok("GET", "/api/connections") == [], what="the connection to go")
    assert api.delete("/api/connections/" + q(name)).status_code == 404
    assert api.get("/api/connections/nope").status_code == 404


def test_users_see_their_own_connections(api, amqp, broker):
    api.ok("PUT", "/api/users/m", {"password": "pw", "tags": "management"})
    api.ok("PUT", "/api/permissions/%2F/m", {"configure": ".*", "write": ".*", "read": ".*"})
    amqp()
    amqp(broker.url_for(user="m", password="pw"))
    wait_until(lambda: len(api.ok("GET", "/api/connections")) == 2)
    m = Api(broker.http_url, auth=("m", "pw"))
    mine = m.ok("GET", "/api/connections")
    assert [c["user"] for c in mine] == ["m"]
    guest_conn = next(c for c in api.ok("GET", "/api/connections") if c["user"] == "guest")
    assert m.delete("/api/connections/" + q(guest_conn["name"])).status_code == 401
    assert m.delete("/api/connections/" + q(mine[0]["name"])).status_code == 204


def test_connection_counters_and_churn(api, amqp):
    c = amqp()
    ch = c.channel()
    ch.queue_declare("churn")
    c.close()
    wait_until(lambda: api.ok("GET", "/api/connections") == [])
    api.ok("DELETE", "/api/queues/%2F/churn")
    churn = api.ok("GET", "/api/overview")["churn_rates"]
    assert churn["connection_created"] == 1 and churn["connection_closed"] == 1
    assert churn["channel_created"] == 1 and churn["channel_closed"] == 1
    assert churn["queue_declared"] == 1 and churn["queue_created"] == 1
    assert churn["queue_deleted"] == 1
