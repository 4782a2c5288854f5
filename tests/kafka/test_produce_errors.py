"""Issue 12 produce checks with KIP-467 per-record errors: a record without a key on a
compacted topic (INVALID_RECORD), CreateTime timestamps out of
message.timestamp.before/after.max.ms (INVALID_TIMESTAMP), LogAppendTime stamping,
max.message.bytes (MESSAGE_TOO_LARGE) and segment-sized appends
(RECORD_LIST_TOO_LARGE). A failing record fails its whole batch; other partitions of
the same request are unaffected. Exact record_errors are read with kafka-python's
protocol codec; confluent-kafka and kcat see the errors as their users would."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, TIMESTAMP_LOG_APPEND_TIME

import kafka_helpers as kh
from test_admin_parity import kp_call

T = kh.CLIENT_TIMEOUT_S
INVALID_RECORD, INVALID_TIMESTAMP = 87, 32
MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE = 10, 18


def batch(records, ts=None):
    """A v2 record batch built by kafka-python: records are (key, value)."""
    from kafka.record.memory_records import MemoryRecordsBuilder
    b = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    now = int(time.time() * 1000) if ts is None else ts
    for k, v in records:
        b.append(timestamp=now, key=k, value=v)
    b.close()
    return bytes(b.buffer())


def produce_raw(bootstrap, topic, parts, version=9):
    """parts: {partition: record batch bytes} -> {partition: partition response}."""
    from kafka.protocol.producer import ProduceRequest as Req
    TD = Req.TopicProduceData
    req = Req(transactional_id=None, acks=-1, timeout_ms=int(T * 1000), topic_data=[
        TD(name=topic, partition_data=[
            TD.PartitionProduceData(index=p, records=recs) for p, recs in parts.items()])])
    resp = kp_call(bootstrap, req, version)
    return {p.index: p for p in resp.responses[0].partition_responses}


def test_null_key_on_compacted_topic_fails_its_batch_only(bootstrap, topic):
    t = topic(partitions=2, config={"cleanup.policy": "compact"})
    got = produce_raw(bootstrap, t, {
        0: batch([(b"a", b"1"), (None, b"2"), (b"c", b"3"), (None, b"4")]),
        1: batch([(b"k", b"ok")]),
    })
    bad, good = got[0], got[1]
    assert bad.error_code == INVALID_RECORD
    assert [e.batch_index for e in bad.record_errors] == [1, 3]
    assert "without key" in bad.record_errors[0].batch_index_error_message
    assert "2 record errors" in bad.error_message
    assert good.error_code == 0 and good.base_offset == 0
    # Nothing of the failed batch was stored.
    assert kh.watermarks(bootstrap, t)[0] == (0, 0)
    assert kh.watermarks(bootstrap, t)[1] == (0, 1)


def test_confluent_producer_sees_invalid_record(bootstrap, topic):
    t = topic(partitions=1, config={"cleanup.policy": "compact"})
    with pytest.raises(AssertionError, match="INVALID_RECORD|Invalid record"):
        kh.produce(bootstrap, t, [b"no-key"])
    kh.produce(bootstrap, t, [(b"key", b"fine")])
    assert kh.watermarks(bootstrap, t)[0] == (0, 1)


def test_timestamp_bounds(bootstrap, topic):
    t = topic(partitions=1, config={"message.timestamp.before.max.ms": "60000",
                                    "message.timestamp.after.max.ms": "60000"})
    now = int(time.time() * 1000)
    got = produce_raw(bootstrap, t, {0: batch([(b"a", b"old"), (b"b", b"old")], ts=now - 3_600_000)})
    assert got[0].error_code == INVALID_TIMESTAMP
    assert [e.batch_index for e in got[0].record_errors] == [0, 1]
    assert "out of range" in got[0].record_errors[0].batch_index_error_message
    got = produce_raw(bootstrap, t, {0: batch([(b"a", b"future")], ts=now + 3_600_000)})
    assert got[0].error_code == INVALID_TIMESTAMP
    assert produce_raw(bootstrap, t, {0: batch([(b"a", b"now")])})[0].error_code == 0
    # confluent-kafka: a producer timestamp a day old.
    p = kh.producer(bootstrap)
    errs = []
    p.produce(t, value=b"x", timestamp=now - 86_400_000, on_delivery=lambda e, m: errs.append(e))
    p.flush(T)
    assert errs and errs[0] is not None and errs[0].code() == KafkaError.INVALID_TIMESTAMP


def test_deprecated_difference_bounds_both_sides(bootstrap, topic):
    t = topic(partitions=1, config={"message.timestamp.difference.max.ms": "60000"})
    now = int(time.time() * 1000)
    got = produce_raw(bootstrap, t, {0: batch([(b"a", b"old")], ts=now - 3_600_000)})
    assert got[0].error_code == INVALID_TIMESTAMP


def test_log_append_time_rewrites_timestamps(bootstrap, topic):
    t = topic(partitions=1, config={"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    got = produce_raw(bootstrap, t, {0: batch([(b"a", b"1"), (b"b", b"2")], ts=1000)})
    after = int(time.time() * 1000)
    assert got[0].error_code == 0
    assert before <= got[0].log_append_time_ms <= after
    # librdkafka's delivery report and consumer both see LogAppendTime.
    acked = []
    p = kh.producer(bootstrap)
    p.produce(t, value=b"3", timestamp=2000, on_delivery=lambda e, m: acked.append(m.timestamp()))
    p.flush(T)
    assert acked[0][0] == TIMESTAMP_LOG_APPEND_TIME and acked[0][1] >= before
    c = kh.consumer(bootstrap)
    try:
        from confluent_kafka import TopicPartition
        c.assign([TopicPartition(t, 0, 0)])
        msgs = []
        deadline = time.time() + T
        while len(msgs) < 3 and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                msgs.append(m)
        assert len(msgs) == 3
        for m in msgs:
            ttype, ts = m.timestamp()
            assert ttype == TIMESTAMP_LOG_APPEND_TIME and ts >= before, (ttype, ts)
    finally:
        c.close()


def test_max_message_bytes_and_segment_size(bootstrap, topic):
    t = topic(partitions=1, config={"max.message.bytes": "2000"})
    got = produce_raw(bootstrap, t, {0: batch([(b"k", b"x" * 5000)])})
    assert got[0].error_code == MESSAGE_TOO_LARGE
    assert "exceeds the maximum configured value of 2000" in got[0].error_message
    s = topic(partitions=1, config={"segment.bytes": "1000"})
    got = produce_raw(bootstrap, s, {0: batch([(b"k", b"x" * 5000)])})
    assert got[0].error_code == RECORD_LIST_TOO_LARGE
    assert kh.watermarks(bootstrap, s)[0] == (0, 0)


KCAT = shutil.which("kcat") or shutil.which("kafkacat")


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed")
def test_kcat_null_key_on_compacted_topic_fails(bootstrap, topic):
    t = topic(partitions=1, config={"cleanup.policy": "compact"})
    r = subprocess.run([KCAT, "-b", bootstrap, "-m", "15", "-X", "message.timeout.ms=15000",
                        "-P", "-t", t], input=b"no-key\n", capture_output=True, timeout=30)
    assert b"failed to validate record" in r.stderr, r.stderr  # INVALID_RECORD
    assert r.returncode != 0
    assert kh.watermarks(bootstrap, t)[0] == (0, 0)
