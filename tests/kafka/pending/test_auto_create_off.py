"""PENDING: needs a broker option turning off auto-creation of topics on Metadata
(Kafka's auto.create.topics.enable=false). FerryMQ has no such option yet; when it
lands, set AUTO_CREATE_OFF to its flag and move this file up into tests/kafka/."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

import kafka_helpers as kh

AUTO_CREATE_OFF = ["--kafka-auto-create-topics", "false"]  # placeholder flag name


def test_produce_to_unknown_topic_with_auto_create_off(private_broker, uniq):
    b = private_broker(extra_args=AUTO_CREATE_OFF)
    t = uniq("off")
    with pytest.raises(AssertionError, match="_UNKNOWN_TOPIC|UNKNOWN_TOPIC_OR_PART"):
        kh.produce(b.kafka_bootstrap, t, [b"lost"],
                   **{"message.timeout.ms": 8000, "topic.metadata.propagation.max.ms": 1000})
    md = kh.admin(b.kafka_bootstrap).list_topics(topic=t, timeout=10)
    assert md.topics[t].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
