"""Fixtures for the metrics and `ferrymq admin` suite: every test starts its own FerryMQ
(ports 0, its own data dir, the Prometheus listener included) and reads its metrics with
prometheus_client's parser; pika and kafka-python move the numbers.

FERRYMQ_BIN selects the binary (default <repo>/target/release/ferrymq).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from ferryfixtures import broker_fixture, pika_factory, wait_until  # noqa: E402,F401


@pytest.fixture
def broker():
    yield from broker_fixture()


@pytest.fixture
def kbroker():
    yield from broker_fixture(kafka=True)


@pytest.fixture
def amqp(broker):
    """amqp() -> a new pika BlockingConnection to the test's broker (closed at the end)."""
    yield from pika_factory(broker.url)


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
