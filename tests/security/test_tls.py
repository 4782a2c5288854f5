"""TLS on AMQP: AMQPS with pika, server certificate verification by the client, client
certificates required with --tls-verify-peer, EXTERNAL login from the certificate's CN,
plaintext and garbage on the TLS port, and certificate reload on SIGHUP.

Certificates are generated per session by pki.py (cryptography), never committed."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import threading
import time

import pika
import pika.exceptions as pex
import pytest

import amqp_raw
import sechelpers as sh
from pki import client_context, peer_serial, replace_atomically

pytestmark = pytest.mark.timeout(60)

# pika raises a failed TLS handshake as the ssl error itself, a session the server ends
# right after it (TLS 1.3 certificate_required) as an AMQPConnectionError.
TLS_FAILURE = (pex.AMQPConnectionError, ssl.SSLError, ConnectionError)


def ssl_options(ca_file, cert=None, server_hostname="localhost", check_hostname=True):
    return pika.SSLOptions(client_context(ca_file, cert, check_hostname), server_hostname)


def roundtrip(conn, body=b"over tls"):
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    sh.publish_confirmed(ch, "", queue, body)
    assert sh.get_body(ch, queue) == body


def served_serial(port: int, ca_file, cert=None) -> int:
    """Serial number of the certificate the broker presents to a new TLS connection."""
    ctx = client_context(ca_file, cert)
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return peer_serial(t.getpeercert(binary_form=True))


def tls_session_refused(port: int, ctx: ssl.SSLContext, timeout: float = 5.0) -> bool:
    """True if the server refuses the TLS session: the handshake fails, or (TLS 1.3, where
    the client finishes first) the first read after it ends in an alert or EOF without
    any AMQP data."""
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.settimeout(timeout)
        try:
            t = ctx.wrap_socket(s, server_hostname="localhost")
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return True
        with t:
            try:
                t.sendall(amqp_raw.PROTOCOL_HEADER)
                data = t.recv(4096)
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                return True
            except (socket.timeout, TimeoutError):
                return False
            return data == b""


def closed_within(port: int, payload: bytes, seconds: float) -> bool:
    """Send `payload` on a plain TCP connection; True if the server closes it within
    `seconds` (whatever it sends first, e.g. a TLS alert)."""
    deadline = time.monotonic() + seconds
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        try:
            s.sendall(payload)
        except (ConnectionResetError, BrokenPipeError):
            return True
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return True
            except (socket.timeout, TimeoutError):
                return False
            if not chunk:
                return True
        return False


# ------------------------------------------------------------------------- AMQPS

@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_amqps_publish_consume_roundtrip(start_broker, connect, tls, pki, server_hostname):
    b = start_broker(tls=tls)
    assert b.amqps_port and b.amqps_port != b.port
    conn = connect(b.amqps_port, ssl_options=ssl_options(pki["ca"].cert_path,
                                                         server_hostname=server_hostname))
    ch = conn.channel()
    ch.queue_declare("tls.q", exclusive=True)
    got = []
    ch.basic_consume("tls.q", lambda c, m, p, body: (got.append(body),
                                                     c.basic_ack(m.delivery_tag)))
    bodies = [f"m{i}".encode() for i in range(50)] + [os.urandom(1 << 20)]
    for body in bodies:
        sh.publish_confirmed(ch, "", "tls.q", body)
    sh.wait_until(lambda: (conn.process_data_events(0.05), len(got) == len(bodies))[1],
                  timeout=20, what="every message back over TLS")
    assert got == bodies
    # The plaintext listener keeps working next to it.
    roundtrip(connect(b.port), b"plain")


def test_client_rejects_a_server_certificate_from_another_ca(start_broker, connect, tls, pki):
    b = start_broker(tls=tls)
    with pytest.raises(TLS_FAILURE):
        connect(b.amqps_port, ssl_options=ssl_options(pki["other_ca"].cert_path))
    ctx = client_context(pki["other_ca"].cert_path)
    with socket.create_connection(("127.0.0.1", b.amqps_port), 5) as s:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(s, server_hostname="localhost")
    # A name the certificate does not carry fails too.
    with pytest.raises(TLS_FAILURE):
        connect(b.amqps_port, ssl_options=ssl_options(pki["ca"].cert_path,
                                                      server_hostname="not-this-host.example"))
    roundtrip(connect(b.amqps_port, ssl_options=ssl_options(pki["ca"].cert_path)))


def test_verify_peer_requires_a_client_certificate(start_broker, connect, tls, pki):
    b = start_broker(tls=tls, verify_peer=True)
    ca = pki["ca"].cert_path
    with pytest.raises(TLS_FAILURE):
        connect(b.amqps_port, ssl_options=ssl_options(ca))
    assert tls_session_refused(b.amqps_port, client_context(ca))
    # A certificate from another CA is refused as well.
    assert tls_session_refused(b.amqps_port, client_context(ca, pki["other_alice"]))
    # With a certificate the CA signed, PLAIN login proceeds as usual.
    roundtrip(connect(b.amqps_port, ssl_options=ssl_options(ca, pki["alice"])))
    # The plaintext port does not ask for certificates.
    roundtrip(connect(b.port))


# ---------------------------------------------------------------------- EXTERNAL

def external_defs():
    return sh.definitions(
        users=[sh.user("alice", password_hash=""), sh.user("admin", "admin-pw")],
        vhosts=[sh.vhost("/")],
        permissions=[sh.perm("alice", "/"), sh.perm("admin", "/")])


def test_external_login_with_client_certificate_cn(start_broker, connect, tls, pki):
    b = start_broker(defs=external_defs(), tls=tls, verify_peer=True)
    ca = pki["ca"].cert_path
    conn = connect(b.amqps_port, ssl_options=ssl_options(ca, pki["alice"]),
                   credentials=pika.credentials.ExternalCredentials())
    ch = conn.channel()
    ch.queue_declare("ext.q", exclusive=True)
    # The broker knows who this is: user_id must be alice's.
    sh.publish_confirmed(ch, "", "ext.q", b"me", pika.BasicProperties(user_id="alice"))
    assert sh.get_body(ch, "ext.q") == b"me"
    sh.assert_channel_refused(
        lambda: sh.publish_confirmed(conn.channel(), "", "ext.q", b"x",
                                     pika.BasicProperties(user_id="admin")), 406,
        "PRECONDITION_FAILED - user_id property set to 'admin' but authenticated user was 'alice'",
        conn=conn)


def test_external_with_a_certificate_for_an_unknown_user_is_refused(start_broker, connect,
                                                                    tls, pki):
    b = start_broker(defs=external_defs(), tls=tls, verify_peer=True)
    with pytest.raises(pex.ProbableAuthenticationError) as ei:
        connect(b.amqps_port, ssl_options=ssl_options(pki["ca"].cert_path, pki["mallory"]),
                credentials=pika.credentials.ExternalCredentials())
    text = sh.unwrap(ei.value)
    assert "403" in text and \
        "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL" in text, text


def test_external_is_offered_on_tls_only(start_broker, connect, tls, pki):
    b = start_broker(defs=external_defs(), tls=tls, verify_peer=True)
    ctx = client_context(pki["ca"].cert_path, pki["alice"])
    with amqp_raw.RawAmqp.connect("127.0.0.1", b.amqps_port, tls=ctx,
                                  server_hostname="localhost") as c:
        assert "EXTERNAL" in c.start().mechanisms
    with amqp_raw.RawAmqp.connect("127.0.0.1", b.port) as c:
        mechs = c.start().mechanisms
    assert "EXTERNAL" not in mechs and "PLAIN" in mechs, mechs
    with pytest.raises(pex.AuthenticationError):
        connect(b.port, credentials=pika.credentials.ExternalCredentials())
    # Asking for it anyway on the plaintext port is refused: connection.close 403 or 503,
    # or (RabbitMQ) the socket is dropped. Never a login.
    with amqp_raw.RawAmqp.connect("127.0.0.1", b.port) as c:
        c.start()
        c.start_ok("EXTERNAL", b"")
        got = c.read_until_eof(15)
    assert not [m for m in got if m.name == (10, 30)], f"EXTERNAL login on plaintext: {got}"
    for m in got:
        if m.name == (10, 50):
            assert amqp_raw.parse_close(m).code in (403, 503), amqp_raw.parse_close(m)


def test_passwordless_user_cannot_use_plain_over_tls(start_broker, connect, tls, pki):
    b = start_broker(defs=external_defs(), tls=tls, verify_peer=True)
    with pytest.raises(pex.ProbableAuthenticationError):
        connect(b.amqps_port, "alice", "", ssl_options=ssl_options(pki["ca"].cert_path,
                                                                   pki["alice"]))
    # An ordinary user logs in with PLAIN over TLS, presenting any valid certificate.
    roundtrip(connect(b.amqps_port, "admin", "admin-pw",
                      ssl_options=ssl_options(pki["ca"].cert_path, pki["alice"])))


# ------------------------------------------------------------------- bad clients

def test_plaintext_and_garbage_on_the_tls_port_are_closed_quickly(start_broker, connect,
                                                                   tls, pki):
    b = start_broker(tls=tls)
    ca = pki["ca"].cert_path
    survivor = connect(b.amqps_port, ssl_options=ssl_options(ca))
    assert closed_within(b.amqps_port, amqp_raw.PROTOCOL_HEADER, 6), \
        "a plaintext AMQP client on the AMQPS port was not closed within 6 s"
    assert closed_within(b.amqps_port, os.urandom(4096), 6), \
        "4 KiB of garbage on the AMQPS port was not closed within 6 s"
    assert closed_within(b.amqps_port, b"\x16\x03\x01\xff\xff" + os.urandom(64), 6), \
        "a bogus TLS record header was not closed within 6 s"
    # Many at once do not starve anyone.
    results = []

    def bad():
        results.append(closed_within(b.amqps_port, os.urandom(512), 10))
    threads = [threading.Thread(target=bad) for _ in range(20)]
    for t in threads:
        t.start()
    roundtrip(connect(b.amqps_port, ssl_options=ssl_options(ca)), b"during garbage")
    for t in threads:
        t.join(15)
    assert results == [True] * 20
    roundtrip(survivor, b"still here")
    roundtrip(connect(b.port), b"plain still fine")
    assert b.running


def test_tls_client_on_the_plaintext_port_is_closed_quickly(start_broker, connect, tls, pki):
    b = start_broker(tls=tls)
    ctx = client_context(pki["ca"].cert_path)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", b.port), 5) as s:
        s.settimeout(6)
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            ctx.wrap_socket(s, server_hostname="localhost")
    assert time.monotonic() - t0 < 6
    roundtrip(connect(b.port))


# ------------------------------------------------------------------- SIGHUP reload

def _server_files(tmp_path, issued):
    cert, key = tmp_path / "live-cert.pem", tmp_path / "live-key.pem"
    replace_atomically(issued.cert, cert)
    replace_atomically(issued.key, key)
    return cert, key


@pytest.mark.timeout(90)
def test_sighup_reloads_the_certificate_without_dropping_connections(start_broker, connect,
                                                                     pki, tmp_path):
    ca = pki["ca"]
    first = ca.server(filename="reload-1")
    second = ca.server(filename="reload-2")
    cert, key = _server_files(tmp_path, first)
    b = start_broker("--tls-cert-file", str(cert), "--tls-key-file", str(key))
    assert served_serial(b.amqps_port, ca.cert_path) == first.serial
    old = connect(b.amqps_port, ssl_options=ssl_options(ca.cert_path))
    roundtrip(old, b"before")

    replace_atomically(second.cert, cert)
    replace_atomically(second.key, key)
    b.send_signal(signal.SIGHUP)
    sh.wait_until(lambda: served_serial(b.amqps_port, ca.cert_path) == second.serial,
                  timeout=10, what="new TLS connections to get the new certificate")
    assert b.running
    roundtrip(old, b"after reload, same connection")
    roundtrip(connect(b.amqps_port, ssl_options=ssl_options(ca.cert_path)), b"new connection")


@pytest.mark.timeout(90)
def test_sighup_with_a_broken_certificate_keeps_the_old_one(start_broker, connect, pki,
                                                            tmp_path):
    ca = pki["ca"]
    first = ca.server(filename="keep-1")
    second = ca.server(filename="keep-2")
    cert, key = _server_files(tmp_path, first)
    b = start_broker("--tls-cert-file", str(cert), "--tls-key-file", str(key))
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    b.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert b.running, "a bad certificate on reload must not stop the broker"
    assert served_serial(b.amqps_port, ca.cert_path) == first.serial
    roundtrip(connect(b.amqps_port, ssl_options=ssl_options(ca.cert_path)))
    # A key that does not match the certificate is refused the same way.
    replace_atomically(second.cert, cert)
    replace_atomically(pki["alice"].key, key)
    b.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert b.running
    assert served_serial(b.amqps_port, ca.cert_path) == first.serial
    # Fixed files are picked up by the next SIGHUP.
    replace_atomically(second.key, key)
    b.send_signal(signal.SIGHUP)
    sh.wait_until(lambda: served_serial(b.amqps_port, ca.cert_path) == second.serial,
                  timeout=10, what="the corrected certificate to be served")
