"""AMQP authentication: PLAIN (pika) and AMQPLAIN (raw socket) logins, RabbitMQ's 403
texts for bad credentials, unknown mechanisms (503), guest only from loopback, the
--default-user administrator from anywhere, and vhost access refusals (530)."""

from __future__ import annotations

import pika
import pika.exceptions as pex
import pytest

import amqp_raw
import sechelpers as sh

pytestmark = pytest.mark.timeout(60)

PLAIN_REFUSED = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"


def alice_defs(**extra):
    """alice/s3cret with all permissions on "/"; the file creates no guest."""
    return sh.definitions(
        users=[sh.user("alice", "s3cret"), *extra.pop("users", [])],
        vhosts=[sh.vhost("/"), *extra.pop("vhosts", [])],
        permissions=[sh.perm("alice", "/"), *extra.pop("permissions", [])],
        **extra)


def assert_login_refused(exc_info, mechanism="PLAIN"):
    text = sh.unwrap(exc_info.value)
    assert "403" in text, text
    assert f"ACCESS_REFUSED - Login was refused using authentication mechanism {mechanism}" \
        in text, text


def roundtrip(conn):
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    sh.publish_confirmed(ch, "", queue, b"hello")
    assert sh.get_body(ch, queue) == b"hello"


# ------------------------------------------------------------------------ PLAIN

def test_guest_wrong_password_is_refused_with_403(start_broker, connect):
    b = start_broker()
    with pytest.raises(pex.ProbableAuthenticationError) as ei:
        connect(b.port, "guest", "not-guest")
    assert_login_refused(ei)
    roundtrip(connect(b.port, "guest", "guest"))


def test_wrong_password_is_refused_with_403(start_broker, connect):
    b = start_broker(defs=alice_defs())
    with pytest.raises(pex.ProbableAuthenticationError) as ei:
        connect(b.port, "alice", "wrong")
    assert_login_refused(ei)
    roundtrip(connect(b.port, "alice", "s3cret"))


def test_unknown_user_is_refused_like_a_wrong_password(start_broker, connect):
    b = start_broker(defs=alice_defs())
    with pytest.raises(pex.ProbableAuthenticationError) as ei:
        connect(b.port, "nobody", "s3cret")
    assert_login_refused(ei)


def test_passwordless_user_cannot_log_in_with_plain(start_broker, connect):
    # An empty password_hash means "no password": PLAIN is refused whatever is sent
    # (such a user logs in with EXTERNAL only, see test_tls.py).
    defs = alice_defs(users=[sh.user("certonly", password_hash="")],
                      permissions=[sh.perm("certonly", "/")])
    b = start_broker(defs=defs)
    for pw in ("", "anything"):
        with pytest.raises(pex.ProbableAuthenticationError) as ei:
            connect(b.port, "certonly", pw)
        assert_login_refused(ei)


def test_huge_password_is_refused_and_the_broker_keeps_serving(start_broker, connect):
    b = start_broker(defs=alice_defs())
    with pytest.raises(pex.AMQPConnectionError):
        connect(b.port, "alice", "x" * 3000)
    with pytest.raises(pex.AMQPConnectionError):
        connect(b.port, "alice", "x" * 200_000)
    roundtrip(connect(b.port, "alice", "s3cret"))


# --------------------------------------------------------------------- AMQPLAIN

def test_amqplain_login_guest(start_broker):
    b = start_broker()
    m = amqp_raw.login("127.0.0.1", b.port, "AMQPLAIN", amqp_raw.amqplain_response("guest", "guest"))
    assert m.name == (10, 41), f"expected connection.open-ok, got {m}"


def test_amqplain_login_user_and_wrong_password(start_broker):
    b = start_broker(defs=alice_defs())
    m = amqp_raw.login("127.0.0.1", b.port, "AMQPLAIN", amqp_raw.amqplain_response("alice", "s3cret"))
    assert m.name == (10, 41), f"expected connection.open-ok, got {m}"
    m = amqp_raw.login("127.0.0.1", b.port, "AMQPLAIN", amqp_raw.amqplain_response("alice", "nope"))
    close = amqp_raw.parse_close(m)
    assert (close.code, close.text) == (403, sh.login_refused("AMQPLAIN"))


def test_plain_raw_response_for_user(start_broker):
    b = start_broker(defs=alice_defs())
    m = amqp_raw.login("127.0.0.1", b.port, "PLAIN", amqp_raw.plain_response("alice", "s3cret"))
    assert m.name == (10, 41), m
    m = amqp_raw.login("127.0.0.1", b.port, "PLAIN", amqp_raw.plain_response("alice", "bad"))
    close = amqp_raw.parse_close(m)
    assert (close.code, close.text) == (403, sh.login_refused("PLAIN"))


def test_unknown_mechanism_is_closed_with_503(start_broker):
    # connection.close 503 COMMAND_INVALID (the brief, and FerryMQ today). RabbitMQ itself
    # raises that error but, still in the `starting` state, drops the socket after 3 s
    # without sending it (rabbit_reader handle_exception); that is accepted too. Never a
    # login.
    b = start_broker()
    with amqp_raw.RawAmqp.connect("127.0.0.1", b.port) as c:
        c.start()
        c.start_ok("FOO-BAR", b"whatever")
        got = c.read_until_eof(15)
    assert not [m for m in got if m.name == (10, 30)], f"login must not proceed: {got}"
    closes = [amqp_raw.parse_close(m) for m in got if m.name == (10, 50)]
    for close in closes:
        assert close.code == 503, close
        assert close.text == "COMMAND_INVALID - unknown authentication mechanism 'FOO-BAR'"


def test_plaintext_port_offers_plain_and_amqplain_but_not_external(start_broker):
    b = start_broker()
    with amqp_raw.RawAmqp.connect("127.0.0.1", b.port) as c:
        mechs = c.start().mechanisms
    assert "PLAIN" in mechs and "AMQPLAIN" in mechs, mechs
    assert "EXTERNAL" not in mechs, mechs


def test_failed_login_without_close_capability_just_drops_the_socket(start_broker):
    # RabbitMQ sends connection.close 403 only to clients that announce
    # authentication_failure_close; others see the TCP connection end (after a delay).
    b = start_broker(defs=alice_defs())
    with amqp_raw.RawAmqp.connect("127.0.0.1", b.port) as c:
        c.start()
        c.start_ok("PLAIN", amqp_raw.plain_response("alice", "bad"), capabilities=False)
        got = c.read_until_eof(15)
    assert not [m for m in got if m.name == (10, 50)], f"unexpected connection.close: {got}"
    assert not [m for m in got if m.name == (10, 30)], f"login must not succeed: {got}"


# ------------------------------------------------------- guest only from loopback

def test_guest_from_non_loopback_address_is_refused(start_broker, connect, external_ip):
    b = start_broker("--bind", "0.0.0.0")
    with pytest.raises(pex.ProbableAuthenticationError) as ei:
        connect(b.port, "guest", "guest", host=external_ip)
    # The client sees RabbitMQ's generic refusal (authentication_failure_close); the
    # reason is in the broker log (next test).
    assert_login_refused(ei)
    roundtrip(connect(b.port, "guest", "guest"))  # loopback is fine


def test_guest_refusal_reason_is_logged(start_broker, connect, external_ip):
    b = start_broker("--bind", "0.0.0.0")
    with pytest.raises(pex.ProbableAuthenticationError):
        connect(b.port, "guest", "guest", host=external_ip)
    sh.wait_until(lambda: "user 'guest' can only connect via localhost"
                  in b.log_path.read_text(errors="replace"),
                  timeout=5, what="the broker log to say why guest was refused")


def test_default_user_connects_from_anywhere_and_replaces_guest(start_broker, connect,
                                                               external_ip):
    b = start_broker("--bind", "0.0.0.0", "--default-user", "admin", "--default-pass", "adm1n-pw")
    roundtrip(connect(b.port, "admin", "adm1n-pw", host=external_ip))
    roundtrip(connect(b.port, "admin", "adm1n-pw"))
    with pytest.raises(pex.ProbableAuthenticationError) as ei:
        connect(b.port, "guest", "guest")
    assert_login_refused(ei)


def test_default_user_from_environment(start_broker, connect):
    b = start_broker(env={"FERRYMQ_DEFAULT_USER": "envadmin",
                          "FERRYMQ_DEFAULT_PASS": "env-pw"})
    roundtrip(connect(b.port, "envadmin", "env-pw"))
    with pytest.raises(pex.ProbableAuthenticationError):
        connect(b.port, "guest", "guest")


def test_default_user_is_created_on_first_boot_only(start_broker, connect):
    b = start_broker("--default-user", "first", "--default-pass", "first-pw")
    roundtrip(connect(b.port, "first", "first-pw"))
    b.stop()
    b.extra_args = ["--default-user", "second", "--default-pass", "second-pw"]
    b.start()
    roundtrip(connect(b.port, "first", "first-pw"))
    with pytest.raises(pex.ProbableAuthenticationError):
        connect(b.port, "second", "second-pw")


# ------------------------------------------------------------------- vhost access

def test_missing_vhost_is_refused_with_530(start_broker, connect):
    b = start_broker(defs=sh.definitions(users=[sh.user("u", "pw")], vhosts=[sh.vhost("/")],
                                         permissions=[sh.perm("u", "/")]))
    with pytest.raises(pex.ProbableAccessDeniedError) as ei:
        connect(b.port, "u", "pw", "nope")
    text = sh.unwrap(ei.value)
    assert "530" in text and sh.vhost_refused("nope", "u") in text, text


def test_guest_missing_vhost_is_refused_with_530(start_broker, connect):
    b = start_broker()
    with pytest.raises(pex.ProbableAccessDeniedError) as ei:
        connect(b.port, "guest", "guest", "nope")
    text = sh.unwrap(ei.value)
    assert "530" in text and sh.vhost_refused("nope", "guest") in text, text


def test_vhost_without_permissions_is_refused_with_530(start_broker, connect):
    b = start_broker(defs=sh.definitions(
        users=[sh.user("u", "pw"), sh.user("other", "pw")],
        vhosts=[sh.vhost("/"), sh.vhost("v")],
        permissions=[sh.perm("u", "/"), sh.perm("other", "v")]))
    with pytest.raises(pex.ProbableAccessDeniedError) as ei:
        connect(b.port, "u", "pw", "v")
    text = sh.unwrap(ei.value)
    assert "530" in text and sh.vhost_refused("v", "u") in text, text
    roundtrip(connect(b.port, "other", "pw", "v"))
    roundtrip(connect(b.port, "u", "pw", "/"))


def test_empty_permission_row_still_grants_vhost_access(start_broker, connect):
    # Access to a vhost needs a permission row, not a non-empty one (RabbitMQ): with
    # "" "" "" the user connects but may not touch anything.
    b = start_broker(defs=sh.definitions(users=[sh.user("u", "pw")], vhosts=[sh.vhost("v")],
                                         permissions=[sh.perm("u", "v", "", "", "")]))
    conn = connect(b.port, "u", "pw", "v")
    ch = conn.channel()
    sh.assert_channel_refused(lambda: ch.queue_declare("q"), 403,
                              sh.access_refused("configure", "queue", "q", "v", "u"),
                              conn=conn)


def test_plain_credentials_object_and_url_agree(start_broker):
    # The amqp:// URL form (percent-encoded vhost) reaches the same user and vhost.
    b = start_broker(defs=sh.definitions(users=[sh.user("u", "p@ss/word")],
                                         vhosts=[sh.vhost("team/a")],
                                         permissions=[sh.perm("u", "team/a")]))
    p = pika.URLParameters(b.url_for("u", "p@ss/word", "team/a"))
    p.connection_attempts = 1
    p.socket_timeout = 10
    c = pika.BlockingConnection(p)
    try:
        roundtrip(c)
    finally:
        c.close()
