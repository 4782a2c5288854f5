"""OffsetDelete (key 47), with kafka-python's KafkaAdminClient.delete_group_offsets
(confluent-kafka's Python AdminClient does not expose DeleteConsumerGroupOffsets):
Kafka's rules (GROUP_ID_NOT_FOUND, GROUP_SUBSCRIBED_TO_TOPIC for topics the members of a
consumer group subscribe to, the other offsets deleted), unknown partitions, and the
deletion kept across a restart (the committed-offset journal)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition as CTP
from kafka import TopicPartition as KTP
from kafka import errors as kerr

import kafka_helpers as kh

T = kh.CLIENT_TIMEOUT_S


def kp_admin(bootstrap):
    from kafka.admin import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(T * 1000))


def committed(bootstrap, group) -> dict[tuple[str, int], int]:
    """The group's committed offsets (confluent-kafka's ListConsumerGroupOffsets)."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    a = kh.admin(bootstrap)
    out = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(T)
    return {(tp.topic, tp.partition): tp.offset for tp in out.topic_partitions if tp.offset >= 0}


def delete(bootstrap, group, parts):
    a = kp_admin(bootstrap)
    try:
        out = a.delete_group_offsets(group, [KTP(t, p) for t, p in parts])
    finally:
        a.close()
    return {(tp.topic, tp.partition): e for tp, e in out.items()}


def test_offset_delete_rules_and_restart(private_broker, uniq):
    b = private_broker()
    bs = b.kafka_bootstrap
    t1, t2 = uniq("od1"), uniq("od2")
    kh.create_topic(bs, t1, 2)
    kh.create_topic(bs, t2, 1)
    # A group with commits only (no members): everything asked for goes.
    g = uniq("odg")
    c = kh.consumer(bs, g)
    c.commit(offsets=[CTP(t1, 0, 3), CTP(t1, 1, 4), CTP(t2, 0, 5)], asynchronous=False)
    c.close()
    assert committed(bs, g) == {(t1, 0): 3, (t1, 1): 4, (t2, 0): 5}
    out = delete(bs, g, [(t1, 0), (t2, 0)])
    assert out == {(t1, 0): kerr.NoError, (t2, 0): kerr.NoError}, out
    assert committed(bs, g) == {(t1, 1): 4}
    # Partitions that do not exist.
    out = delete(bs, g, [(t1, 9), (uniq("none"), 0)])
    assert set(out.values()) == {kerr.UnknownTopicOrPartitionError}, out
    # A group that does not exist.
    with pytest.raises(kerr.GroupIdNotFoundError):
        delete(bs, uniq("nogroup"), [(t1, 0)])
    # A classic consumer group with a member subscribed to t2: t2's offsets stay
    # (GROUP_SUBSCRIBED_TO_TOPIC), t1's go.
    g2 = uniq("odsub")
    member = kh.consumer(bs, g2)
    member.subscribe([t2])
    deadline = time.monotonic() + T
    while not member.assignment() and time.monotonic() < deadline:
        member.poll(0.2)
    assert member.assignment(), "no assignment"
    member.commit(offsets=[CTP(t2, 0, 1), CTP(t1, 0, 2)], asynchronous=False)
    out = delete(bs, g2, [(t2, 0), (t1, 0)])
    assert out == {(t2, 0): kerr.GroupSubscribedToTopicError, (t1, 0): kerr.NoError}, out
    assert committed(bs, g2) == {(t2, 0): 1}
    member.close()
    # Once the group is empty, t2's offset can go too.
    kh.wait_for(lambda: delete(bs, g2, [(t2, 0)]) == {(t2, 0): kerr.NoError},
                what="offset of the now empty group deleted")
    # The deletions are durable.
    b.stop()
    b.start(same_port=True)
    assert committed(b.kafka_bootstrap, g) == {(t1, 1): 4}
    assert committed(b.kafka_bootstrap, g2) == {}
