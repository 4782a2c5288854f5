"""`ferrymq topics` and `ferrymq groups` (the real binary) against a real broker: the
Kafka user's commands over the management API, the same tables, --json and exit codes
as `ferrymq admin kafka …`, checked against what kafka-python sees."""

from __future__ import annotations

import json
import subprocess

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from conftest import wait_until
from test_admin import table


def cli(broker, *args, check=True):
    cmd = [str(broker.binary), *args[:1], "--port", str(broker.ports["http"]),
           "--host", "127.0.0.1", "--username", "guest", "--password", "guest", *args[1:]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def test_topics_create_list_describe_delete(kbroker):
    out = cli(kbroker, "topics", "create", "orders", "--partitions", "3",
              "--config", "cleanup.policy=compact", "--config", "retention.ms=60000").stdout
    assert out == 'declared topic "orders"\n'
    a = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
    try:
        assert "orders" in a.list_topics()
        res = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "orders")])
        assert "compact" in repr(res) and "60000" in repr(res)
    finally:
        a.close()
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap)
    for i in range(5):
        p.send("orders", key=b"k%d" % i, value=b"v", partition=1)
    p.flush()
    p.close()
    rows = table(cli(kbroker, "topics", "list").stdout)
    assert [(r["name"], r["partitions"], r["messages"]) for r in rows] == [("orders", "3", "5")]
    parts = table(cli(kbroker, "topics", "describe", "orders").stdout)
    assert [(r["partition"], r["log_end_offset"]) for r in parts] == [("0", "0"), ("1", "5"), ("2", "0")]
    js = json.loads(cli(kbroker, "topics", "list", "--json").stdout)
    assert js[0]["name"] == "orders"
    # Growing an existing topic goes through the same command.
    assert cli(kbroker, "topics", "create", "orders", "--partitions", "4").stdout == 'updated topic "orders"\n'
    assert table(cli(kbroker, "topics", "list").stdout)[0]["partitions"] == "4"
    # Errors: a bad config is the API's 400 (exit 1), a malformed --config is bad input (4).
    r = cli(kbroker, "topics", "create", "bad", "--config", "cleanup.policy=shred", check=False)
    assert r.returncode == 1 and "HTTP 400" in r.stderr and r.stderr.startswith("ferrymq topics: ")
    r = cli(kbroker, "topics", "create", "bad", "--config", "novalue", check=False)
    assert r.returncode == 4 and "NAME=VALUE" in r.stderr
    assert cli(kbroker, "topics", "delete", "orders").stdout == 'deleted topic "orders"\n'
    assert cli(kbroker, "topics", "list").stdout.count("orders") == 0
    r = cli(kbroker, "topics", "describe", "orders", check=False)
    assert r.returncode == 1 and "HTTP 404" in r.stderr
    r = cli(kbroker, "topics", "frobnicate", check=False)
    assert r.returncode == 2


def test_groups_list_and_describe_with_lag(kbroker):
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap)
    for i in range(10):
        p.send("views", b"v%d" % i)
    p.flush()
    p.close()
    c = KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap, group_id="readers",
                      enable_auto_commit=False, auto_offset_reset="earliest")
    c.assign([TopicPartition("views", 0)])
    from kafka.structs import OffsetAndMetadata
    try:
        meta = OffsetAndMetadata(7, "", -1)
    except TypeError:
        meta = OffsetAndMetadata(7, "")
    c.commit({TopicPartition("views", 0): meta})
    c.close()
    groups = wait_until(lambda: table(cli(kbroker, "groups", "list").stdout), what="a group")
    assert [(g["name"], g["lag"]) for g in groups] == [("readers", "3")]
    out = cli(kbroker, "groups", "describe", "readers").stdout
    assert out.startswith('group "readers": state Empty, 0 member(s), lag 3\n')
    assert table(out.split("\n", 1)[1]) == [{"topic": "views", "partition": "0",
                                             "committed": "7", "log_end": "10", "lag": "3"}]
    r = cli(kbroker, "groups", "describe", "nobody", check=False)
    assert r.returncode == 1 and "HTTP 404" in r.stderr
