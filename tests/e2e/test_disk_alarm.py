"""Free-disk watermark: below `--disk-free-limit` publishing connections are blocked
(`connection.blocked` to clients that support it, their sockets no longer read) while other
connections keep consuming.

Skipped when FERRYMQ_TEST_AMQP_URL points the suite at an external broker."""

from __future__ import annotations

import time

import pika

from amqp_helpers import params_for


def test_low_disk_blocks_publishers_but_not_consumers(private_broker):
    # A limit no disk satisfies: the alarm is on from the start.
    b = private_broker(extra_args=["--disk-free-limit", str(10**18)])
    consumer = pika.BlockingConnection(params_for(b.url))
    cch = consumer.channel()
    q = cch.queue_declare("", exclusive=True).method.queue

    publisher = pika.BlockingConnection(params_for(b.url))
    blocked = []
    publisher.add_on_connection_blocked_callback(lambda _c, frame: blocked.append(frame.method.reason))
    pch = publisher.channel()
    pch.basic_publish("", q, b"first")
    deadline = time.time() + 10
    while not blocked and time.time() < deadline:
        publisher.process_data_events(time_limit=0.1)
    assert blocked and "disk" in blocked[0], blocked

    # The publish that revealed the publisher went through; the consumer is served.
    m = cch.basic_get(q, auto_ack=True)
    assert m[2] == b"first"
    # Further publishes wait in the blocked connection: nothing more arrives.
    pch.basic_publish("", q, b"second")
    publisher.process_data_events(time_limit=0.5)
    assert cch.basic_get(q, auto_ack=True)[0] is None
    consumer.close()
