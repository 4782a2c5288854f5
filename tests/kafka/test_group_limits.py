"""Consumer-group limits: `group.max.size` (JoinGroup beyond it gets GROUP_MAX_SIZE_REACHED,
with confluent-kafka and kafka-python) and offset retention (`offsets.retention.minutes`,
KIP-211: offsets of an emptied group and standalone commits expire, those of an active
group's subscribed topics stay, and the expiry is durable across a restart)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from kafka import KafkaConsumer
from kafka.errors import GroupMaxSizeReachedError

import kafka_helpers as kh


def _assigned(c: Consumer, timeout: float = 30) -> None:
    """Polls until the consumer has its assignment (records may arrive meanwhile)."""
    deadline = time.monotonic() + timeout
    while not c.assignment():
        assert time.monotonic() < deadline, "no assignment"
        m = c.poll(0.2)
        if m is not None and m.error() and m.error().code() != KafkaError._PARTITION_EOF:
            raise AssertionError(f"unexpected error: {m.error()}")


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)],
                          timeout=kh.CLIENT_TIMEOUT_S)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}


@pytest.mark.timeout(120)
def test_group_max_size_refuses_the_third_member(private_broker, uniq):
    b = private_broker(extra_args=["--kafka-group-max-size", "2"])
    t = uniq("t")
    kh.create_topic(b.kafka_bootstrap, t, 4)
    group = uniq("g")
    members = [kh.consumer(b.kafka_bootstrap, group=group, **{"session.timeout.ms": 6000})
               for _ in range(2)]
    third = kh.consumer(b.kafka_bootstrap, group=group)
    py = None
    try:
        for c in members:
            c.subscribe([t])
        deadline = time.monotonic() + 30
        while not all(c.assignment() for c in members):
            assert time.monotonic() < deadline, "two members never shared the topic"
            for c in members:
                c.poll(0.1)
        # confluent-kafka (librdkafka): the JoinGroup error reaches poll().
        third.subscribe([t])
        seen = None
        deadline = time.monotonic() + 30
        while seen is None and time.monotonic() < deadline:
            m = third.poll(0.2)
            for c in members:
                c.poll(0)
            if m is not None and m.error():
                seen = m.error().code()
        assert seen == KafkaError.GROUP_MAX_SIZE_REACHED, seen
        assert not third.assignment()
        # kafka-python raises GroupMaxSizeReachedError from poll().
        py = KafkaConsumer(t, bootstrap_servers=b.kafka_bootstrap, group_id=group,
                           enable_auto_commit=False)
        with pytest.raises(GroupMaxSizeReachedError):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                py.poll(timeout_ms=200)
                for c in members:
                    c.poll(0)
        # The two members kept their partitions between them.
        owned = sorted(tp.partition for c in members for tp in c.assignment())
        assert owned == [0, 1, 2, 3]
    finally:
        if py is not None:
            py.close(autocommit=False)
        third.close()
        for c in members:
            c.close()


@pytest.mark.timeout(240)
def test_offsets_expire_after_retention_and_stay_expired(private_broker, uniq):
    # Kafka counts offsets.retention.minutes in whole minutes: the shortest is one.
    b = private_broker(extra_args=["--kafka-offsets-retention-minutes", "1",
                                   "--kafka-offsets-retention-check-interval-ms", "500"])
    bs = b.kafka_bootstrap
    t = uniq("t")
    kh.create_topic(bs, t, 2)
    kh.produce(bs, t, kh.numbered(20, "ret"))
    simple, emptied, active = uniq("simple"), uniq("emptied"), uniq("active")

    # Standalone commit (no group membership): expires one minute after the commit.
    s = Consumer({"bootstrap.servers": bs, "group.id": simple, "enable.auto.commit": False})
    s.commit(offsets=[TopicPartition(t, 0, 3), TopicPartition(t, 1, 4)], asynchronous=False)
    s.close()
    # A consumer group that commits and then empties: one minute after it emptied.
    e = kh.consumer(bs, group=emptied)
    e.subscribe([t])
    _assigned(e)
    e.commit(offsets=[TopicPartition(t, 0, 5)], asynchronous=False)
    e.close()
    # An active group subscribed to the topic: its offsets never expire.
    a = kh.consumer(bs, group=active, **{"session.timeout.ms": 10000})
    a.subscribe([t])
    try:
        _assigned(a)
        a.commit(offsets=[TopicPartition(t, 0, 7), TopicPartition(t, 1, 8)], asynchronous=False)
        start = time.monotonic()
        assert _committed(bs, simple, t, 2) == {0: 3, 1: 4}
        assert _committed(bs, emptied, t, 2) == {0: 5}
        # Not yet: well inside the minute.
        while time.monotonic() - start < 40:
            a.poll(0.5)
        assert _committed(bs, simple, t, 2) == {0: 3, 1: 4}
        assert _committed(bs, emptied, t, 2) == {0: 5}
        deadline = start + 90
        while (_committed(bs, simple, t, 2) or _committed(bs, emptied, t, 2)):
            assert time.monotonic() < deadline, "offsets did not expire"
            a.poll(1.0)
        assert time.monotonic() - start >= 50, "expired before the retention period"
        assert _committed(bs, active, t, 2) == {0: 7, 1: 8}
    finally:
        a.close()
    # With the default retention (7 days), a restart must not bring the expired offsets back
    # from <data_dir>/kafka/groups/.
    b.stop()
    b.extra_args = []
    b.start()
    assert _committed(b.kafka_bootstrap, simple, t, 2) == {}
    assert _committed(b.kafka_bootstrap, emptied, t, 2) == {}
    assert _committed(b.kafka_bootstrap, active, t, 2) == {0: 7, 1: 8}
