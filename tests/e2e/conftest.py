"""Fixtures for the FerryMQ end-to-end suite (pika clients against a live broker).

If FERRYMQ_TEST_AMQP_URL is set, every test runs against that broker (this is
how the suite is validated against RabbitMQ); otherwise one FerryMQ process is
started for the session from FERRYMQ_BIN (default target/release/ferrymq).
Tests use uuid-based names, so they can share one broker.
"""

from __future__ import annotations

import uuid

import pika
import pytest

from amqp_helpers import params_for
from ferrybroker import Broker, BrokerStartError, ExternalBroker, external_url


@pytest.fixture(scope="session")
def broker():
    url = external_url()
    if url:
        yield ExternalBroker(url)
        return
    b = Broker()
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
def private_broker():
    """Factory for fresh FerryMQ brokers owned by one test (restart scenarios).

    `b = private_broker()` returns a started Broker with its own data dir;
    b.stop()/b.kill9()/b.start() restart it on the same data. Skips when the
    suite targets an external broker, which the suite cannot restart.
    """
    if external_url():
        pytest.skip("needs a private FerryMQ broker (FERRYMQ_TEST_AMQP_URL is set)")
    made: list[Broker] = []

    def make(**kwargs) -> Broker:
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
def connect(broker):
    """Factory: connect() -> a new BlockingConnection to the session broker
    (or connect(url) to another one); all closed at teardown."""
    conns: list[pika.BlockingConnection] = []

    def make(url: str | None = None) -> pika.BlockingConnection:
        c = pika.BlockingConnection(params_for(url or broker.url))
        conns.append(c)
        return c

    yield make
    for c in conns:
        try:
            if c.is_open:
                c.close()
        except Exception:
            pass


@pytest.fixture
def conn(connect):
    return connect()


@pytest.fixture
def ch(conn):
    return conn.channel()


@pytest.fixture
def uniq():
    """uniq('q') -> 'e2e.q.<uuid>': names that never clash between tests/runs."""
    def make(prefix: str = "x") -> str:
        return f"e2e.{prefix}.{uuid.uuid4().hex[:12]}"
    return make


@pytest.fixture
def cleanup(broker):
    """Register queues/exchanges to delete after the test (on a fresh connection),
    for shared, non-exclusive entities that outlive their connections."""
    queues: list[str] = []
    exchanges: list[str] = []

    class Registry:
        def queue(self, name):
            queues.append(name)
            return name

        def exchange(self, name):
            exchanges.append(name)
            return name

    yield Registry()
    if not queues and not exchanges:
        return
    try:
        c = pika.BlockingConnection(params_for(broker.url))
    except Exception:
        return
    try:
        for q in queues:
            chan = c.channel()
            try:
                chan.queue_delete(q)
                chan.close()
            except Exception:
                pass
        for x in exchanges:
            chan = c.channel()
            try:
                chan.exchange_delete(x)
                chan.close()
            except Exception:
                pass
    finally:
        try:
            c.close()
        except Exception:
            pass
