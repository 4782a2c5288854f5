"""With auto-creation off (`--kafka-auto-create-topics false`, Kafka's
auto.create.topics.enable=false) producing to an unknown topic fails with
UNKNOWN_TOPIC_OR_PARTITION and creates nothing."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

import kafka_helpers as kh

AUTO_CREATE_OFF = ["--kafka-auto-create-topics", "false"]


def test_produce_to_unknown_topic_with_auto_create_off(private_broker, uniq):
    b = private_broker(extra_args=AUTO_CREATE_OFF)
    t = uniq("off")
    with pytest.raises(AssertionError, match="_UNKNOWN_TOPIC|UNKNOWN_TOPIC_OR_PART"):
        kh.produce(b.kafka_bootstrap, t, [b"lost"],
                   **{"message.timeout.ms": 8000, "topic.metadata.propagation.max.ms": 1000})
    md = kh.admin(b.kafka_bootstrap, **{"allow.auto.create.topics": True}).list_topics(
        topic=t, timeout=10)  # even a metadata request that allows creation
    assert md.topics[t].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    # Explicit creation still works.
    kh.create_topic(b.kafka_bootstrap, t, 2)
    assert kh.produce(b.kafka_bootstrap, t, [b"kept"], partition=1)[0].offset == 0
