"""Records with one key land in one partition and are read back in the order they
were produced (per-key ordering), with librdkafka's and kafka-python's partitioners."""

from __future__ import annotations

import kafka_helpers as kh

KEYS = [f"user-{i}".encode() for i in range(20)]
PER_KEY = 50


def interleaved():
    return [(k, f"{k.decode()}#{n}".encode()) for n in range(PER_KEY) for k in KEYS]


def check_per_key_order(recs):
    assert len(recs) == len(KEYS) * PER_KEY
    seen: dict[bytes, list] = {}
    for r in sorted(recs, key=lambda r: (r.partition, r.offset)):
        seen.setdefault(r.key, []).append(r)
    assert set(seen) == set(KEYS)
    used = set()
    for k, rs in seen.items():
        parts = {r.partition for r in rs}
        assert len(parts) == 1, f"key {k!r} spread over partitions {parts}"
        used |= parts
        assert [int(r.value.split(b"#")[1]) for r in rs] == list(range(PER_KEY)), k
    # 20 keys over 6 partitions: a partitioner that ignores keys (or a broker that
    # ignores the requested partition) would not give this spread plus stickiness.
    assert len(used) > 1


def test_confluent_keys_stick_and_keep_order(bootstrap, topic):
    t = topic(partitions=6)
    kh.produce(bootstrap, t, interleaved(), **{"enable.idempotence": False,
                                               "max.in.flight.requests.per.connection": 1})
    check_per_key_order(kh.consume_to_end(bootstrap, t))


def test_kafka_python_keys_stick_and_keep_order(bootstrap, topic):
    t = topic(partitions=6)
    kh.kp_produce(bootstrap, t, interleaved(), max_in_flight_requests_per_connection=1)
    check_per_key_order(kh.kp_consume_to_end(bootstrap, t))


def test_murmur2_partitioner_matches_java(bootstrap, topic):
    """librdkafka with partitioner=murmur2_random places keys as Java/kafka-python do;
    both clients agree with each other through the broker."""
    t = topic(partitions=6)
    recs = [(k, b"x") for k in KEYS]
    a = kh.produce(bootstrap, t, recs, partitioner="murmur2_random")
    b = kh.kp_produce(bootstrap, t, recs)
    assert {r.key: r.partition for r in a} == {r.key: r.partition for r in b}
