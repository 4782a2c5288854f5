"""Produce and consume with every compression codec, with both Python clients, and
across them (a batch compressed by librdkafka is read by kafka-python and vice versa):
the broker must store and serve compressed batches intact."""

from __future__ import annotations

import pytest

import kafka_helpers as kh

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def values(codec: str, n: int = 300) -> list[bytes]:
    # Compressible (repeated text) and distinct (numbered), so a lost or duplicated
    # record, or a batch served undecompressed, shows up as a value mismatch.
    return [f"{codec}-{i:05d}-".encode() + b"payload " * 20 for i in range(n)]


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_roundtrip(bootstrap, topic, codec):
    t = topic(partitions=1)
    vals = values(codec)
    acked = kh.produce(bootstrap, t, vals, **{"compression.type": codec, "linger.ms": 20})
    assert sorted(r.offset for r in acked) == list(range(len(vals)))
    got = kh.consume_to_end(bootstrap, t)
    assert [r.value for r in got] == vals
    assert [r.offset for r in got] == list(range(len(vals)))


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_roundtrip(bootstrap, topic, codec):
    t = topic(partitions=1)
    vals = values(codec)
    kp_codec = None if codec == "none" else codec
    acked = kh.kp_produce(bootstrap, t, vals, compression_type=kp_codec)
    assert [r.offset for r in acked] == list(range(len(vals)))
    got = kh.kp_consume_to_end(bootstrap, t)
    assert [r.value for r in got] == vals


@pytest.mark.parametrize("codec", CODECS)
def test_cross_client(bootstrap, topic, codec):
    """confluent-kafka writes, kafka-python reads, and the other way round."""
    t1 = topic(partitions=1)
    vals = values(codec, 100)
    kh.produce(bootstrap, t1, vals, **{"compression.type": codec})
    assert [r.value for r in kh.kp_consume_to_end(bootstrap, t1)] == vals

    t2 = topic(partitions=1)
    kh.kp_produce(bootstrap, t2, vals, compression_type=None if codec == "none" else codec)
    assert [r.value for r in kh.consume_to_end(bootstrap, t2)] == vals
