"""Fixtures for the metrics and `ferrymq admin` suite: every test starts its own FerryMQ
(ports 0, its own data dir, the Prometheus listener included) and reads its metrics with
prometheus_client's parser; pika and kafka-python move the numbers.

FERRYMQ_BIN selects the binary (default <repo>/target/release/ferrymq).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pika
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from ferrybroker import Broker, BrokerStartError  # noqa: E402


def start_broker(**kw) -> Broker:
    b = Broker(http=True, **kw)
    try:
        b.start()
    except BrokerStartError as e:
        b.cleanup()
        pytest.fail(str(e), pytrace=False)
    return b


@pytest.fixture
def broker():
    b = start_broker()
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def kbroker():
    b = start_broker(kafka=True)
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def amqp(broker):
    """amqp() -> a new pika BlockingConnection to the test's broker (closed at the end)."""
    conns = []

    def make() -> pika.BlockingConnection:
        p = pika.URLParameters(broker.url)
        p.connection_attempts = 1
        p.socket_timeout = 10
        c = pika.BlockingConnection(p)
        conns.append(c)
        return c

    yield make
    for c in conns:
        try:
            if c.is_open:
                c.close()
        except Exception:
            pass


class Scrape:
    """One scrape, parsed by prometheus_client: families by name, and lookups."""

    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(self, name: str):
        """Every sample whose name is `name` (counters' `_total` included)."""
        out = []
        for f in self.families.values():
            out += [s for s in f.samples if s.name == name]
        return out

    def value(self, name: str, **labels) -> float:
        """The value of the one sample of `name` whose labels include `labels`."""
        found = [s for s in self.samples(name)
                 if all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples: {found}"
        return found[0].value

    def has(self, name: str, **labels) -> bool:
        return any(all(s.labels.get(k) == v for k, v in labels.items())
                   for s in self.samples(name))


def scrape(base: str, path: str = "/metrics", **params) -> Scrape:
    r = requests.get(base + path, params=params, timeout=15)
    assert r.status_code == 200, f"{path} -> {r.status_code} {r.text[:300]}"
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
    return Scrape(r.text)


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
