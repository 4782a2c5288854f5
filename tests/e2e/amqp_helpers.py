"""Small helpers shared by the e2e tests."""

from __future__ import annotations

import time

import pika


def params_for(url: str) -> pika.ConnectionParameters:
    p = pika.URLParameters(url)
    p.connection_attempts = 1
    p.socket_timeout = 10
    p.stack_timeout = 15
    p.blocked_connection_timeout = 30
    p.heartbeat = 60
    return p


def wait_for(conn: pika.BlockingConnection, predicate, timeout: float = 10.0,
             what: str = "condition"):
    """Pump `conn`'s I/O until predicate() is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        conn.process_data_events(time_limit=min(0.05, remaining))


def get_all(ch, queue: str, ack: bool = True, limit: int = 10_000):
    """basic.get until get-empty; returns [(method, properties, body)]."""
    out = []
    for _ in range(limit):
        method, props, body = ch.basic_get(queue, auto_ack=False)
        if method is None:
            return out
        out.append((method, props, body))
        if ack:
            ch.basic_ack(method.delivery_tag)
    raise AssertionError(f"queue {queue} did not become empty after {limit} gets")


def bodies(msgs):
    return [body for _m, _p, body in msgs]


def ready_count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def consumer_count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.consumer_count
