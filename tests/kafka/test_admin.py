"""Admin calls with confluent-kafka's AdminClient and kafka-python's KafkaAdminClient:
create / describe / delete topics, topic configs, partitions, records, cluster."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

import kafka_helpers as kh

T = kh.CLIENT_TIMEOUT_S


def err_code(exc_info) -> int:
    e = exc_info.value
    return e.args[0].code() if isinstance(e, KafkaException) else e.code()


def topic_configs(bootstrap, name) -> dict[str, str]:
    a = kh.admin(bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = a.describe_configs([res])[res].result(T)
    return {k: v.value for k, v in entries.items()}


def test_create_describe_delete_topic(bootstrap, uniq):
    a = kh.admin(bootstrap)
    name = uniq("adm")
    fs = a.create_topics([NewTopic(name, num_partitions=3, replication_factor=1,
                                   config={"retention.ms": "3600000",
                                           "cleanup.policy": "delete"})])
    fs[name].result(T)
    kh.wait_for(lambda: kh.partitions_of(bootstrap, name) == 3, what="topic in metadata")

    desc = a.describe_topics(TopicCollection([name]))[name].result(T)
    assert desc.name == name
    assert [p.id for p in desc.partitions] == [0, 1, 2]
    assert all(p.leader is not None for p in desc.partitions)
    assert desc.topic_id is not None and str(desc.topic_id) != "AAAAAAAAAAAAAAAAAAAAAA"

    cfg = topic_configs(bootstrap, name)
    assert cfg["retention.ms"] == "3600000"
    assert cfg["cleanup.policy"] == "delete"
    # Defaults are described too.
    assert "segment.bytes" in cfg and "max.message.bytes" in cfg

    # Creating it again: TOPIC_ALREADY_EXISTS.
    with pytest.raises(KafkaException) as ei:
        a.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(T)
    assert err_code(ei) == KafkaError.TOPIC_ALREADY_EXISTS

    a.delete_topics([name])[name].result(T)
    kh.wait_for(lambda: kh.partitions_of(bootstrap, name) == 0, what="topic gone from metadata")

    with pytest.raises(KafkaException) as ei:
        a.delete_topics([name])[name].result(T)
    assert err_code(ei) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_create_topic_bad_arguments(bootstrap, uniq):
    a = kh.admin(bootstrap)
    name = uniq("bad")
    with pytest.raises(KafkaException) as ei:
        a.create_topics([NewTopic(name, num_partitions=0, replication_factor=1)])[name].result(T)
    assert err_code(ei) == KafkaError.INVALID_PARTITIONS
    with pytest.raises(KafkaException) as ei:
        a.create_topics([NewTopic(name, num_partitions=1, replication_factor=1,
                                  config={"cleanup.policy": "shred"})])[name].result(T)
    assert err_code(ei) == KafkaError.INVALID_CONFIG
    with pytest.raises(KafkaException) as ei:
        a.create_topics([NewTopic("bad/name", num_partitions=1,
                                  replication_factor=1)])["bad/name"].result(T)
    assert err_code(ei) == KafkaError.TOPIC_EXCEPTION  # INVALID_TOPIC_EXCEPTION, 17
    assert kh.partitions_of(bootstrap, name) == 0


def test_incremental_alter_configs(bootstrap, topic):
    t = topic(partitions=1)
    a = kh.admin(bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=[
        ConfigEntry("retention.ms", "120000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", "200000", incremental_operation=AlterConfigOpType.SET),
    ])
    a.incremental_alter_configs([res])[res].result(T)
    cfg = topic_configs(bootstrap, t)
    assert cfg["retention.ms"] == "120000"
    assert cfg["max.message.bytes"] == "200000"
    # Survives into behaviour: a 300 kB record is now too large for this topic.
    with pytest.raises(AssertionError, match="MSG_SIZE_TOO_LARGE|MESSAGE_TOO_LARGE"):
        kh.produce(bootstrap, t, [b"x" * 300_000], **{"message.max.bytes": 2_000_000})

    res = ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    a.incremental_alter_configs([res])[res].result(T)
    assert topic_configs(bootstrap, t)["retention.ms"] == "604800000"  # Kafka's default


def test_incremental_append_and_subtract_on_a_topic_list_config(bootstrap, topic):
    """APPEND and SUBTRACT work on a list config over its default, as in Kafka: the
    topic's cleanup.policy starts as the default "delete"."""
    t = topic(partitions=1)
    a = kh.admin(bootstrap)

    def alter(*entries):
        res = ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=list(entries))
        a.incremental_alter_configs([res])[res].result(T)

    alter(ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND))
    assert topic_configs(bootstrap, t)["cleanup.policy"] == "delete,compact"
    # Appending what is there already adds nothing.
    alter(ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND))
    assert topic_configs(bootstrap, t)["cleanup.policy"] == "delete,compact"
    alter(ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT))
    assert topic_configs(bootstrap, t)["cleanup.policy"] == "compact"
    # A value the list may not hold is INVALID_CONFIG, and changes nothing.
    with pytest.raises(KafkaException) as ei:
        alter(ConfigEntry("cleanup.policy", "shred", incremental_operation=AlterConfigOpType.APPEND))
    assert err_code(ei) == KafkaError.INVALID_CONFIG
    assert topic_configs(bootstrap, t)["cleanup.policy"] == "compact"


def test_create_partitions(bootstrap, topic):
    t = topic(partitions=2)
    a = kh.admin(bootstrap)
    a.create_partitions([NewPartitions(t, 5)])[t].result(T)
    kh.wait_for(lambda: kh.partitions_of(bootstrap, t) == 5, what="5 partitions")
    acked = kh.produce(bootstrap, t, [b"to-four"], partition=4)
    assert acked[0].partition == 4 and acked[0].offset == 0
    # Shrinking is refused with INVALID_PARTITIONS.
    with pytest.raises(KafkaException) as ei:
        a.create_partitions([NewPartitions(t, 3)])[t].result(T)
    assert err_code(ei) == KafkaError.INVALID_PARTITIONS


def test_delete_records(bootstrap, topic):
    t = topic(partitions=1)
    kh.produce(bootstrap, t, kh.numbered(100, "dr"))
    a = kh.admin(bootstrap)
    tp = TopicPartition(t, 0, 40)
    res = a.delete_records([tp])[tp].result(T)
    assert res.low_watermark == 40
    assert kh.watermarks(bootstrap, t)[0] == (40, 100)
    got = kh.consume_to_end(bootstrap, t)
    assert [r.offset for r in got] == list(range(40, 100))
    assert got[0].value == b"dr-000040"


def test_describe_cluster(bootstrap):
    a = kh.admin(bootstrap)  # keep the client alive until the future completes
    desc = a.describe_cluster().result(T)
    assert desc.nodes
    assert desc.controller is not None
    host, port = bootstrap.rsplit(":", 1)
    assert any(int(n.port) == int(port) for n in desc.nodes), desc.nodes


# ------------------------------------------------------------ kafka-python admin

def kp_admin(bootstrap):
    from kafka.admin import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(T * 1000))


def test_kafka_python_admin_lifecycle(bootstrap, uniq):
    from kafka import TopicPartition as KTP
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType, NewTopic as KNewTopic
    from kafka.errors import TopicAlreadyExistsError

    a = kp_admin(bootstrap)
    try:
        name = uniq("kpadm")
        a.create_topics([KNewTopic(name, 2, 1, topic_configs={"retention.bytes": "1048576"})])
        kh.wait_for(lambda: name in a.list_topics(), what="topic listed")
        (d,) = a.describe_topics([name])
        assert d["name"] == name and len(d["partitions"]) == 2

        res = a.describe_configs([KConfigResource(ConfigResourceType.TOPIC, name)],
                                 config_filter="all")
        flat = repr(res)
        assert "retention.bytes" in flat and "1048576" in flat, flat

        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics([KNewTopic(name, 1, 1)])

        a.create_partitions({name: 4})
        kh.wait_for(lambda: kh.partitions_of(bootstrap, name) == 4, what="4 partitions")

        kh.produce(bootstrap, name, kh.numbered(30, "kp"), partition=3)
        a.delete_records({KTP(name, 3): 10})
        assert kh.watermarks(bootstrap, name)[3] == (10, 30)

        a.delete_topics([name])
        kh.wait_for(lambda: name not in a.list_topics(), what="topic deleted")
    finally:
        a.close()
