"""The test harness itself: a private broker restarts on its own data dir.

Skipped when FERRYMQ_TEST_AMQP_URL points the suite at an external broker.
Restart/durability scenarios build on the `private_broker` fixture.
"""

from __future__ import annotations

import pika

from amqp_helpers import params_for


def test_private_broker_restarts_on_same_data_dir(private_broker):
    b = private_broker()
    data_dir = b.data_dir
    c = pika.BlockingConnection(params_for(b.url))
    assert c.channel().queue_declare("e2e.harness", exclusive=True).method.queue == "e2e.harness"
    c.close()

    b.stop()
    assert not b.running and data_dir.is_dir()
    b.start()
    c = pika.BlockingConnection(params_for(b.url))
    assert c.is_open
    c.close()

    port = b.port
    b.kill9()
    assert not b.running and data_dir.is_dir()
    b.start(same_port=True)
    assert b.data_dir == data_dir and b.port == port
    c = pika.BlockingConnection(params_for(b.url))
    assert c.is_open
    c.close()
