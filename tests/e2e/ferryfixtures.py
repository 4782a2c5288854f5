"""Pieces the HTTP-facing suites share (tests/http, tests/metrics, tests/ui, tests/memory):
starting a broker as a pytest fixture would, a pika connection factory that closes what it
opened, polling for a condition, and a small client of the management API.

The broker process itself is `ferrybroker.Broker`.
"""

from __future__ import annotations

import time
import urllib.parse

import pika
import pytest
import requests

from ferrybroker import Broker, BrokerStartError


def q(s: str) -> str:
    """A path segment as clients encode it (vhost `/` → `%2F`)."""
    return urllib.parse.quote(s, safe="")


def start_broker(*args: str, **kw) -> Broker:
    """A started broker with the HTTP listener (extra serve arguments in `args`); a start
    failure fails the test with the broker's own message."""
    kw.setdefault("http", True)
    b = Broker(extra_args=list(args), **kw) if args else Broker(**kw)
    try:
        b.start()
    except BrokerStartError as e:
        b.cleanup()
        pytest.fail(str(e), pytrace=False)
    return b


def broker_fixture(**kw):
    """The body of a broker fixture: yields a started broker, cleans it up after."""
    b = start_broker(**kw)
    try:
        yield b
    finally:
        b.cleanup()


def pika_factory(default_url: str):
    """The body of an `amqp` fixture: yields make(url=None, **client_properties) that opens
    a pika BlockingConnection (to `default_url` unless told); all are closed at the end."""
    conns = []

    def make(url: str | None = None, **props) -> pika.BlockingConnection:
        p = pika.URLParameters(url or default_url)
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


def wait_until(predicate, timeout: float = 10.0, what: str = "condition", step: float = 0.05):
    """Polls `predicate` until it returns a true value (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


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

    def json(self, path: str):
        r = self.get(path)
        assert r.status_code == 200, f"GET {path} -> {r.status_code} {r.text}"
        return r.json()

    def ok(self, method: str, path: str, body=None, status=(200, 201, 204)):
        kw = {} if body is None else {"json": body}
        r = self.request(method, path, **kw)
        assert r.status_code in (status if isinstance(status, tuple) else (status,)), \
            f"{method} {path} -> {r.status_code} {r.text}"
        return r.json() if r.content else None
