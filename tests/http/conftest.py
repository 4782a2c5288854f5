"""Fixtures for the management API suite: every test starts its own FerryMQ (ports 0,
its own data dir) with the HTTP listener, and talks to it with requests (and pika or
kafka-python where a test needs real clients).

FERRYMQ_BIN selects the binary (default <repo>/target/release/ferrymq).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from ferrybroker import Broker  # noqa: E402,F401
from ferryfixtures import (  # noqa: E402,F401
    Api, broker_fixture, pika_factory, q, start_broker, wait_until)


@pytest.fixture
def broker():
    yield from broker_fixture()


@pytest.fixture
def api(broker) -> Api:
    return Api(broker.http_url)


@pytest.fixture
def amqp(broker):
    """amqp(url=None, **client_properties) -> a new pika BlockingConnection to the test's
    broker (closed at the end)."""
    yield from pika_factory(broker.url)
