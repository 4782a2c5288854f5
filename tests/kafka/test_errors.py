"""Auto-creation on Metadata, and the error codes clients see: MESSAGE_TOO_LARGE,
UNKNOWN_TOPIC_OR_PARTITION, OFFSET_OUT_OF_RANGE through auto.offset.reset."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

import kafka_helpers as kh

T = kh.CLIENT_TIMEOUT_S


def test_auto_create_on_metadata_confluent(bootstrap, uniq):
    t = uniq("auto")
    assert kh.partitions_of(bootstrap, t) == 0  # the admin helper never auto-creates
    acked = kh.produce(bootstrap, t, [b"first"])  # producer metadata request creates it
    assert acked[0].offset == 0
    assert kh.partitions_of(bootstrap, t) >= 1
    assert [r.value for r in kh.consume_to_end(bootstrap, t)] == [b"first"]


def test_auto_create_on_metadata_kafka_python(bootstrap, uniq):
    t = uniq("autokp")
    acked = kh.kp_produce(bootstrap, t, [b"one", b"two"])
    assert [r.offset for r in acked] == [0, 1] or len({r.partition for r in acked}) == 2
    assert sorted(r.value for r in kh.kp_consume_to_end(bootstrap, t)) == [b"one", b"two"]


def test_metadata_of_unknown_topic_without_auto_create(bootstrap, uniq):
    t = uniq("nope")
    md = kh.admin(bootstrap).list_topics(topic=t, timeout=T)
    assert md.topics[t].error is not None
    assert md.topics[t].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert kh.partitions_of(bootstrap, t) == 0  # asking did not create it


def test_message_too_large(bootstrap, topic):
    t = topic(partitions=1)
    # The client would send up to 10 MB: the refusal must come from the broker
    # (topic max.message.bytes defaults to 1048588, as Kafka's).
    with pytest.raises(AssertionError, match="MSG_SIZE_TOO_LARGE"):
        kh.produce(bootstrap, t, [b"x" * 2_000_000],
                   **{"message.max.bytes": 10_000_000, "compression.type": "none"})
    # The connection and topic keep working.
    assert kh.produce(bootstrap, t, [b"small"])[0].offset == 0

    from kafka.errors import MessageSizeTooLargeError
    with pytest.raises(MessageSizeTooLargeError):
        kh.kp_produce(bootstrap, t, [b"y" * 2_000_000], max_request_size=10_000_000)
    assert [r.value for r in kh.consume_to_end(bootstrap, t)] == [b"small"]


def test_fetch_out_of_range_resets_per_policy(bootstrap, topic):
    t = topic(partitions=1)
    kh.produce(bootstrap, t, kh.numbered(10, "oor"))

    # earliest: fetching at 1000 gets OFFSET_OUT_OF_RANGE, the client resets to 0.
    c = kh.consumer(bootstrap, **{"auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(t, 0, 1000)])
        m = kh.wait_for(lambda: _first_record(c), 20, what="reset to earliest")
        assert m.offset() == 0
    finally:
        c.close()

    # error: the application is told.
    c = kh.consumer(bootstrap, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(t, 0, 1000)])

        def reset_error():
            m = c.poll(0.2)
            if m is not None and m.error() and m.error().code() != KafkaError._PARTITION_EOF:
                return m.error()
        err = kh.wait_for(reset_error, 20, what="auto.offset.reset=error to report")
        assert err.code() == KafkaError._AUTO_OFFSET_RESET, err
        assert "out of range" in err.str().lower() or "OFFSET_OUT_OF_RANGE" in err.str(), err
    finally:
        c.close()

    # kafka-python with auto_offset_reset="latest": goes to the end, sees only new records.
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP
    kc = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest",
                       enable_auto_commit=False)
    try:
        tp = KTP(t, 0)
        kc.assign([tp])
        kc.seek(tp, 1000)
        kh.wait_for(lambda: (kc.poll(timeout_ms=100), kc.position(tp) == 10)[1], 20,
                    what="kafka-python reset to latest")
        kh.produce(bootstrap, t, [b"after-reset"])
        got = []
        kh.wait_for(lambda: got.extend(m.value for ms in kc.poll(timeout_ms=200).values()
                                       for m in ms) or got, 20, what="the new record")
        assert got == [b"after-reset"]
    finally:
        kc.close()


def _first_record(c):
    m = c.poll(0.2)
    if m is None:
        return None
    if m.error():
        if m.error().code() == KafkaError._PARTITION_EOF:
            return None
        raise KafkaException(m.error())
    return m


def test_produce_to_missing_partition(bootstrap, topic):
    t = topic(partitions=2)
    with pytest.raises(AssertionError, match="UNKNOWN_PARTITION|UNKNOWN_TOPIC_OR_PART"):
        kh.produce(bootstrap, t, [b"nowhere"], partition=7, **{"message.timeout.ms": 5000})
