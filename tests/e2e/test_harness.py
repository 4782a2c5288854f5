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


def test_private_broker_reports_its_listeners(private_broker):
    b = private_broker()
    assert b.ports["amqp"] == b.port
    assert b.addresses["amqp"][1] == b.port
    assert b.amqps_port is None  # no certificate, no TLS listener


def test_listen_lines_and_tls_flags():
    """The harness parses every `ferrymq: <listener> listening on ADDR:PORT` line and,
    when a certificate is configured, asks for port 0 on the TLS listeners."""
    from ferrybroker import LISTEN_RE, Broker

    for line, want in [
        ("ferrymq: amqp listening on 0.0.0.0:5672", ("amqp", "0.0.0.0", "5672")),
        ("ferrymq: amqps listening on [::]:5671\n", ("amqps", "[::]", "5671")),
        ("\x1b[2mx\x1b[0m ferrymq: kafka listening on 127.0.0.1:9092", ("kafka", "127.0.0.1", "9092")),
        ("ferrymq: kafka-tls listening on 0.0.0.0:9093", ("kafka-tls", "0.0.0.0", "9093")),
    ]:
        m = LISTEN_RE.search(line)
        assert m and m.groups() == want, line
    assert LISTEN_RE.search("ferrymq: http listener not available yet (see README)") is None

    plain = Broker(kafka=True)
    tls = Broker(kafka=True, extra_args=["--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"])
    chosen = Broker(extra_args=["--tls-cert-file", "c.pem", "--tls-key-file", "k.pem",
                                "--amqps-port", "5999"])
    try:
        assert "--amqps-port" not in plain.command()
        assert plain.wanted_listeners() == {"amqp", "kafka"}
        cmd = tls.command()
        for flag in ("--amqps-port", "--kafka-tls-port", "--https-port"):
            assert cmd[cmd.index(flag) + 1] == "0"
        assert tls.wanted_listeners() == {"amqp", "kafka", "amqps", "kafka-tls"}
        cmd = chosen.command()
        assert cmd.count("--amqps-port") == 1 and cmd[cmd.index("--amqps-port") + 1] == "5999"
        assert chosen.wanted_listeners() == {"amqp", "amqps"}
        assert tls.command(tls_ports={"amqps": 6000})[
            tls.command(tls_ports={"amqps": 6000}).index("--amqps-port") + 1] == "6000"
    finally:
        for b in (plain, tls, chosen):
            b.cleanup()
