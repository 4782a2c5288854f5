"""FerryMQ's Kafka endpoints: topics (partitions, offsets, sizes, configs; create and
delete) and consumer groups (state, members, assignments, committed offsets, lag)."""

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import start_broker, Api, wait_until


@pytest.fixture
def kbroker():
    b = start_broker(kafka=True)
    try:
        yield b
    finally:
        b.cleanup()


def test_topics_crud_and_offsets(kbroker):
    api = Api(kbroker.http_url)
    assert api.put("/api/kafka/topics/%2F/events", {"partitions": 3, "configs": {"retention.ms": "3600000"}}).status_code == 201
    assert api.put("/api/kafka/topics/%2F/events", {"partitions": 3}).status_code == 204
    t = api.ok("GET", "/api/kafka/topics/%2F/events")
    assert t["partitions"] == 3 and t["configs"] == {"retention.ms": "3600000"}
    assert [p["log_end_offset"] for p in t["partition_details"]] == [0, 0, 0]
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap)
    for i in range(10):
        p.send("events", b"v%d" % i, partition=i % 2)
    p.flush()
    p.close()
    t = api.ok("GET", "/api/kafka/topics/%2F/events")
    assert [x["log_end_offset"] for x in t["partition_details"]] == [5, 5, 0]
    assert [x["log_start_offset"] for x in t["partition_details"]] == [0, 0, 0]
    assert t["messages"] == 10 and t["size_bytes"] > 0
    assert all(type(x["size_bytes"]) is int for x in t["partition_details"])
    assert [x["name"] for x in api.ok("GET", "/api/kafka/topics/%2F")] == ["events"]
    assert [x["name"] for x in api.ok("GET", "/api/kafka/topics")] == ["events"]
    # More partitions; bad input.
    assert api.put("/api/kafka/topics/%2F/events", {"partitions": 4}).status_code == 204
    assert api.ok("GET", "/api/kafka/topics/%2F/events")["partitions"] == 4
    assert api.put("/api/kafka/topics/%2F/events", {"partitions": 2}).status_code == 400
    assert api.put("/api/kafka/topics/%2F/bad%20name", {"partitions": 1}).status_code == 400
    assert api.put("/api/kafka/topics/%2F/t2", {"partitions": "x"}).status_code == 400
    assert api.put("/api/kafka/topics/%2F/t2", {"configs": {"cleanup.policy": "shred"}}).status_code == 400
    assert api.get("/api/kafka/topics/%2F/t2").status_code == 404
    assert api.delete("/api/kafka/topics/%2F/events").status_code == 204
    assert api.get("/api/kafka/topics/%2F/events").status_code == 404
    assert api.delete("/api/kafka/topics/%2F/events").status_code == 404


def test_group_lag(kbroker):
    api = Api(kbroker.http_url)
    api.ok("PUT", "/api/kafka/topics/%2F/orders", {"partitions": 2})
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap)
    for i in range(8):
        p.send("orders", b"o%d" % i, partition=i % 2)
    p.flush()
    p.close()
    c = KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap, group_id="billing",
                      client_id="billing-1", enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=10000)
    c.subscribe(["orders"])
    seen = 0
    deadline = time.monotonic() + 20
    while seen < 8 and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            seen += len(recs)
    assert seen == 8
    c.commit({TopicPartition("orders", 0): _meta(1), TopicPartition("orders", 1): _meta(4)})
    g = wait_until(lambda: _group(api), what="the group")
    assert g["state"] == "Stable"
    assert g["members"][0]["client_id"] == "billing-1"
    assert g["members"][0]["assignment"] == {"orders": [0, 1]}
    offs = {(o["topic"], o["partition"]): o for o in g["offsets"]}
    assert offs[("orders", 0)]["committed_offset"] == 1 and offs[("orders", 0)]["lag"] == 3
    assert offs[("orders", 1)]["committed_offset"] == 4 and offs[("orders", 1)]["lag"] == 0
    assert g["lag"] == 3
    assert [x["name"] for x in api.ok("GET", "/api/kafka/groups")] == ["billing"]
    c.close()
    g = wait_until(lambda: (x := api.ok("GET", "/api/kafka/groups/%2F/billing"))["state"] == "Empty" and x,
                   what="the group to empty")
    assert g["members"] == [] and g["lag"] == 3
    assert api.get("/api/kafka/groups/%2F/nobody").status_code == 404
    # Kafka connections are listed too.
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap, client_id="lister")
    p.send("orders", b"x", partition=0)
    p.flush()
    conns = api.ok("GET", "/api/connections")
    assert any(x["protocol"] == "Kafka" and x["client_properties"].get("client_id") == "lister"
               for x in conns)
    p.close()


def _meta(offset):
    from kafka.structs import OffsetAndMetadata
    try:
        return OffsetAndMetadata(offset, "", -1)
    except TypeError:
        return OffsetAndMetadata(offset, "")


def _group(api):
    gs = api.ok("GET", "/api/kafka/groups/%2F")
    if gs and gs[0]["members"] and len(gs[0]["offsets"]) == 2:
        return api.ok("GET", "/api/kafka/groups/%2F/billing")
    return None
