"""Fixtures for the management API suite: every test starts its own FerryMQ (ports 0,
its own data dir) with the HTTP listener, and talks to it with requests (and pika or
kafka-python where a test needs real clients).

FERRYMQ_BIN selects the binary (default <repo>/target/release/ferrymq).
"""

from __future__ import annotations

import sys
import time
import urllib.parse
from pathlib import Path

import pika
import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from ferrybroker import Broker, BrokerStartError  # noqa: E402


def q(s: str) -> str:
    """A path segment as clients encode it (vhost `/` → `%2F`)."""
    return urllib.parse.quote(s, safe="")


class Api:
    """requests against one broker's management API, as guest unless told."""

    def __init__(self, base: str, auth=("guest", "guest"), verify=None):
        self.base = base
        self.auth = auth
        self.session = requests.Session()
        self.verify = verify

    def url(self, path: str) -> str:
        return self.base + path

    def request(self, method: str, path: str, auth=..., **kw) -> requests.Response:
        kw.setdefault("timeout", 15)
        if self.verify is not None:
            kw.setdefault("verify", self.verify)
        return self.session.request(method, self.url(path),
                                    auth=self.auth if auth is ... else auth, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def put(self, path, body=None, **kw):
        if body is not None:
            kw["json"] = body
        return self.request("PUT", path, **kw)

    def post(self, path, body=None, **kw):
        if body is not None:
            kw["json"] = body
        return self.request("POST", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def ok(self, method: str, path: str, body=None, status=(200, 201, 204)):
        kw = {} if body is None else {"json": body}
        r = self.request(method, path, **kw)
        assert r.status_code in (status if isinstance(status, tuple) else (status,)), \
            f"{method} {path} -> {r.status_code} {r.text}"
        return r.json() if r.content else None


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
def api(broker) -> Api:
    return Api(broker.http_url)


@pytest.fixture
def amqp(broker):
    """amqp() -> a new pika BlockingConnection to the test's broker (closed at the end)."""
    conns = []

    def make(url: str | None = None, **props) -> pika.BlockingConnection:
        p = pika.URLParameters(url or broker.url)
        p.connection_attempts = 1
        p.socket_timeout = 10
        if props:
            p.client_properties = props
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


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
