"""Fixtures for the FerryMQ Kafka end-to-end suite (confluent-kafka, kafka-python, kcat).

If FERRYMQ_TEST_KAFKA_BOOTSTRAP=HOST:PORT is set, every test that can runs against
that broker (how the suite is checked against another Kafka-protocol broker); tests
that restart or configure their own broker are skipped then. Otherwise one FerryMQ
process (FERRYMQ_BIN, default target/release/ferrymq) serves the session, and
`private_broker()` starts fresh ones with their own data dir for restart scenarios.
Topic names are uuid-based, so tests share the session broker safely.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from ferrybroker import (  # noqa: E402
    Broker,
    BrokerStartError,
    ExternalKafkaBroker,
    external_kafka_bootstrap,
)

import kafka_helpers as kh  # noqa: E402


@pytest.fixture(scope="session")
def broker():
    bootstrap = external_kafka_bootstrap()
    if bootstrap:
        yield ExternalKafkaBroker(bootstrap)
        return
    b = Broker(kafka=True)
    try:
        b.start()
    except BrokerStartError as e:
        b.cleanup()
        pytest.fail(str(e), pytrace=False)
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def bootstrap(broker) -> str:
    return broker.kafka_bootstrap


@pytest.fixture
def private_broker():
    """Factory: `b = private_broker(extra_args=[...])` is a started FerryMQ with its own
    data dir and Kafka listener; b.stop()/b.kill9()/b.start(same_port=True) restart it
    on the same data. Skipped against an external broker, which cannot be restarted."""
    if external_kafka_bootstrap():
        pytest.skip("needs a private FerryMQ broker (FERRYMQ_TEST_KAFKA_BOOTSTRAP is set)")
    made: list[Broker] = []

    def make(**kwargs) -> Broker:
        kwargs.setdefault("kafka", True)
        b = Broker(**kwargs)
        made.append(b)
        try:
            b.start()
        except BrokerStartError as e:
            pytest.fail(str(e), pytrace=False)
        return b

    yield make
    for b in made:
        b.cleanup()


@pytest.fixture
def uniq():
    """uniq('t') -> 'kt.t.<uuid>': topic and group names that never clash."""
    def make(prefix: str = "t") -> str:
        return f"kt.{prefix}.{uuid.uuid4().hex[:12]}"
    return make


@pytest.fixture
def topic(bootstrap, uniq):
    """Factory: topic(partitions=1, config={...}) creates a topic through the
    AdminClient, waits until Metadata shows all its partitions, returns its name."""
    def make(partitions: int = 1, config: dict | None = None, name: str | None = None,
             on: str | None = None) -> str:
        name = name or uniq("t")
        kh.create_topic(on or bootstrap, name, partitions, config or {})
        return name
    return make
