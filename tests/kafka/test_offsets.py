"""ListOffsets: earliest, latest and by timestamp, through three client APIs."""

from __future__ import annotations

import time

from confluent_kafka import TopicPartition
from confluent_kafka.admin import OffsetSpec

import kafka_helpers as kh

T = kh.CLIENT_TIMEOUT_S


def produce_with_timestamps(bootstrap, t, base_ms: int, n: int) -> None:
    p = kh.producer(bootstrap, **{"linger.ms": 0})
    errors = []
    for i in range(n):
        # One record per 1000 ms of CreateTime: record i has timestamp base + 1000 i.
        p.produce(t, value=f"ts-{i}".encode(), timestamp=base_ms + 1000 * i,
                  on_delivery=lambda e, m: errors.append(e) if e else None)
        p.flush(T)  # separate batches, so the broker's time index sees each
    assert not errors, errors


def test_list_offsets_earliest_latest_and_by_time(bootstrap, topic):
    t = topic(partitions=1)
    base = int(time.time() * 1000) - 3_600_000
    produce_with_timestamps(bootstrap, t, base, 10)

    assert kh.watermarks(bootstrap, t)[0] == (0, 10)

    c = kh.consumer(bootstrap)
    try:
        def at(ts):
            (r,) = c.offsets_for_times([TopicPartition(t, 0, ts)], timeout=T)
            return r.offset
        assert at(base) == 0
        assert at(base - 5000) == 0
        assert at(base + 1) == 1          # first record with timestamp >= ts
        assert at(base + 4000) == 4
        assert at(base + 4500) == 5
        assert at(base + 9000) == 9
        assert at(base + 9001) == -1      # none that late: offset -1 (end)
    finally:
        c.close()


def test_admin_list_offsets(bootstrap, topic):
    t = topic(partitions=2)
    base = int(time.time() * 1000) - 60_000
    produce_with_timestamps(bootstrap, t, base, 5)
    a = kh.admin(bootstrap)
    # produce_with_timestamps used the default partitioner with no key: find where
    # the records went and ask about that partition.
    marks = kh.watermarks(bootstrap, t)
    part = max(marks, key=lambda p: marks[p][1])
    tp = TopicPartition(t, part)
    total = marks[part][1]

    def ask(spec):
        return a.list_offsets({tp: spec})[tp].result(T).offset

    assert ask(OffsetSpec.earliest()) == 0
    assert ask(OffsetSpec.latest()) == total
    assert ask(OffsetSpec.for_timestamp(base - 1)) == 0


def test_kafka_python_offsets(bootstrap, topic):
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    t = topic(partitions=1)
    base = int(time.time() * 1000) - 120_000
    produce_with_timestamps(bootstrap, t, base, 6)
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tp = KTP(t, 0)
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 6}
        found = c.offsets_for_times({tp: base + 2500})[tp]
        assert found.offset == 3 and found.timestamp == base + 3000
        assert c.offsets_for_times({tp: base + 10_000})[tp] is None
    finally:
        c.close()
