"""Virtual hosts: isolation of same-named queues and exchanges, the amq.* exchanges in
each, vhost limits (max-connections 530, max-queues 406), user limits (max-connections
530, max-channels 530), and durability of users, vhosts, permissions and queues across
a restart and a kill -9."""

from __future__ import annotations

import pika
import pika.exceptions as pex
import pytest

import sechelpers as sh

pytestmark = pytest.mark.timeout(60)

AMQ_EXCHANGES = {"amq.direct": "direct", "amq.fanout": "fanout", "amq.topic": "topic",
                 "amq.headers": "headers", "amq.match": "headers"}


def two_vhosts(**extra):
    return sh.definitions(
        users=[sh.user("admin", "admin-pw", tags=["administrator"]),
               sh.user("a_only", "a-pw"), *extra.pop("users", [])],
        vhosts=[sh.vhost("/"), sh.vhost("va"), sh.vhost("vb"), *extra.pop("vhosts", [])],
        permissions=[sh.perm("admin", "/"), sh.perm("admin", "va"), sh.perm("admin", "vb"),
                     sh.perm("a_only", "va"), *extra.pop("permissions", [])],
        **extra)


# ---------------------------------------------------------------------- isolation

def test_same_names_in_two_vhosts_are_isolated(start_broker, connect):
    b = start_broker(defs=two_vhosts())
    chans = {}
    for v in ("va", "vb"):
        ch = connect(b.port, "admin", "admin-pw", v).channel()
        ch.exchange_declare("x", "direct")
        ch.queue_declare("q")
        ch.queue_bind("q", "x", "k")
        chans[v] = ch
    sh.publish_confirmed(chans["va"], "x", "k", b"from-a via x")
    sh.publish_confirmed(chans["vb"], "x", "k", b"from-b via x")
    sh.publish_confirmed(chans["va"], "", "q", b"from-a via default")
    sh.publish_confirmed(chans["vb"], "amq.direct", "q", b"from-b unroutable")
    assert sh.drain_bodies(chans["va"], "q") == [b"from-a via x", b"from-a via default"]
    assert sh.drain_bodies(chans["vb"], "q") == [b"from-b via x"]
    # Deleting in one vhost leaves the other alone.
    chans["va"].queue_delete("q")
    chans["va"].exchange_delete("x")
    assert chans["vb"].queue_declare("q", passive=True).method.queue == "q"
    chans["vb"].exchange_declare("x", passive=True)


def test_a_queue_in_one_vhost_is_not_found_in_another(start_broker, connect):
    b = start_broker(defs=two_vhosts())
    connect(b.port, "admin", "admin-pw", "va").channel().queue_declare("only.a")
    conn = connect(b.port, "admin", "admin-pw", "vb")
    sh.assert_channel_refused(lambda: conn.channel().queue_declare("only.a", passive=True),
                              404, "NOT_FOUND - no queue 'only.a' in vhost 'vb'", conn=conn)
    sh.assert_channel_refused(lambda: conn.channel().basic_get("only.a"),
                              404, "NOT_FOUND - no queue 'only.a' in vhost 'vb'", conn=conn)


def test_every_vhost_has_the_amq_exchanges(start_broker, connect):
    b = start_broker(defs=two_vhosts())
    for v in ("/", "va", "vb"):
        conn = connect(b.port, "admin", "admin-pw", v)
        for name, type_ in AMQ_EXCHANGES.items():
            ch = conn.channel()
            ch.exchange_declare(name, passive=True)
            ch.exchange_declare(name, type_, durable=True)  # equivalent redeclare is fine
        # and they route within the vhost
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "amq.topic", "a.*")
        sh.publish_confirmed(ch, "amq.topic", "a.b", v.encode())
        assert sh.get_body(ch, q) == v.encode()


def test_permissions_are_per_vhost(start_broker, connect):
    b = start_broker(defs=two_vhosts())
    connect(b.port, "a_only", "a-pw", "va").channel().queue_declare("mine")
    with pytest.raises(pex.ProbableAccessDeniedError) as ei:
        connect(b.port, "a_only", "a-pw", "vb")
    assert sh.vhost_refused("vb", "a_only") in sh.unwrap(ei.value)


# ----------------------------------------------------------------- vhost limits

def test_vhost_connection_limit(start_broker, connect):
    defs = two_vhosts(parameters=[sh.vhost_limits("va", max_connections=2)])
    b = start_broker(defs=defs)
    first = connect(b.port, "admin", "admin-pw", "va")
    connect(b.port, "a_only", "a-pw", "va")
    with pytest.raises(pex.ProbableAccessDeniedError) as ei:
        connect(b.port, "admin", "admin-pw", "va")
    text = sh.unwrap(ei.value)
    assert "530" in text, text
    assert ("NOT_ALLOWED - access to vhost 'va' refused for user 'admin': "
            "connection limit (2) is reached") in text, text
    # Other vhosts are not limited.
    for _ in range(3):
        connect(b.port, "admin", "admin-pw", "vb")
    # Closing a connection frees a slot.
    first.close()

    def reconnect():
        c = pika.BlockingConnection(sh.params(b.port, "admin", "admin-pw", "va"))
        c.close()
        return True
    sh.wait_until(reconnect, timeout=10, what="a va connection after one closed")


def test_vhost_connection_limit_zero_refuses_all(start_broker, connect):
    b = start_broker(defs=two_vhosts(parameters=[sh.vhost_limits("vb", max_connections=0)]))
    with pytest.raises(pex.ProbableAccessDeniedError) as ei:
        connect(b.port, "admin", "admin-pw", "vb")
    assert "connection limit (0) is reached" in sh.unwrap(ei.value)


def test_vhost_queue_limit(start_broker, connect):
    b = start_broker(defs=two_vhosts(parameters=[sh.vhost_limits("va", max_queues=2)]))
    conn = connect(b.port, "admin", "admin-pw", "va")
    ch = conn.channel()
    ch.queue_declare("q1")
    ch.queue_declare("q2")
    ch.queue_declare("q1")  # re-declaring an existing queue is not a new queue
    sh.assert_channel_refused(
        lambda: conn.channel().queue_declare("q3"), 406,
        "PRECONDITION_FAILED - cannot declare queue 'q3': queue limit in vhost 'va' (2) is reached",
        conn=conn)
    sh.assert_channel_refused(
        lambda: conn.channel().queue_declare("", exclusive=True), 406,
        text_re=r"PRECONDITION_FAILED - cannot declare queue 'amq\.gen-[^']+': queue limit "
                r"in vhost 'va' \(2\) is reached",
        conn=conn)
    # Other vhosts are not limited; deleting a queue frees a slot.
    vb = connect(b.port, "admin", "admin-pw", "vb").channel()
    for i in range(3):
        vb.queue_declare(f"q{i}")
    ch = conn.channel()
    ch.queue_delete("q1")
    ch.queue_declare("q3")


def test_vhost_queue_limit_zero(start_broker, connect):
    b = start_broker(defs=two_vhosts(parameters=[sh.vhost_limits("vb", max_queues=0)]))
    conn = connect(b.port, "admin", "admin-pw", "vb")
    sh.assert_channel_refused(
        lambda: conn.channel().queue_declare("q"), 406,
        "PRECONDITION_FAILED - cannot declare queue 'q': queue limit in vhost 'vb' (0) is reached",
        conn=conn)


def test_negative_vhost_limit_means_unlimited(start_broker, connect):
    b = start_broker(defs=two_vhosts(parameters=[
        sh.vhost_limits("va", max_queues=-1, max_connections=-1)]))
    conn = connect(b.port, "admin", "admin-pw", "va")
    ch = conn.channel()
    for i in range(5):
        ch.queue_declare(f"q{i}")
    for _ in range(3):
        connect(b.port, "admin", "admin-pw", "va")


# ------------------------------------------------------------------ user limits

def test_user_connection_limit(start_broker, connect):
    defs = two_vhosts(users=[sh.user("lim", "lim-pw", limits={"max-connections": 1})],
                      permissions=[sh.perm("lim", "va"), sh.perm("lim", "vb")])
    b = start_broker(defs=defs)
    first = connect(b.port, "lim", "lim-pw", "va")
    for v in ("va", "vb"):  # the limit is per user, across vhosts
        with pytest.raises(pex.ProbableAccessDeniedError) as ei:
            connect(b.port, "lim", "lim-pw", v)
        text = sh.unwrap(ei.value)
        assert "530" in text, text
        assert ("NOT_ALLOWED - connection refused for user 'lim': "
                "user connection limit (1) is reached") in text, text
    connect(b.port, "admin", "admin-pw", "va")  # other users are not limited
    first.close()

    def reconnect():
        c = pika.BlockingConnection(sh.params(b.port, "lim", "lim-pw", "vb"))
        c.close()
        return True
    sh.wait_until(reconnect, timeout=10, what="lim's connection after the first closed")


def test_user_channel_limit(start_broker, connect):
    defs = two_vhosts(users=[sh.user("lim", "lim-pw", limits={"max-channels": 2})],
                      permissions=[sh.perm("lim", "va")])
    b = start_broker(defs=defs)
    conn = connect(b.port, "lim", "lim-pw", "va")
    c1 = conn.channel()
    conn.channel()
    c1.close()
    c3 = conn.channel()  # closing one freed a slot
    c3.queue_declare("", exclusive=True)
    with pytest.raises(pex.ConnectionClosedByBroker) as ei:
        conn.channel()
    assert ei.value.reply_code == 530
    assert ei.value.reply_text == ("NOT_ALLOWED - number of channels opened for user 'lim' "
                                   "has reached the maximum allowed user limit of 2")
    # Another user on the same broker is not limited.
    admin = connect(b.port, "admin", "admin-pw", "va")
    for _ in range(4):
        admin.channel()


# ------------------------------------------------------------------- durability

def _durable_world():
    return sh.definitions(
        users=[sh.user("u", "u-pw")],
        vhosts=[sh.vhost("team")],
        permissions=[sh.perm("u", "team", r"^dq", r"^(dq|amq\.default)", r"^dq")])


def _check_after_restart(b, connect, queue, bodies):
    conn = connect(b.port, "u", "u-pw", "team")
    ch = conn.channel()
    assert ch.queue_declare(queue, passive=True).method.message_count == len(bodies)
    assert sh.drain_bodies(ch, queue) == bodies
    # The permissions came back too: still refused outside ^dq.
    sh.assert_channel_refused(lambda: conn.channel().queue_declare("other"), 403,
                              sh.access_refused("configure", "queue", "other", "team", "u"),
                              conn=conn)
    # No guest appeared on a restart (the store was not empty).
    with pytest.raises(pex.ProbableAuthenticationError):
        connect(b.port, "guest", "guest")
    # Wrong password still refused (the stored hash, not "anything goes").
    with pytest.raises(pex.ProbableAuthenticationError):
        connect(b.port, "u", "wrong")


@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "kill9"])
def test_users_vhosts_permissions_and_queues_survive_restart(start_broker, connect, crash):
    b = start_broker(defs=_durable_world())
    conn = connect(b.port, "u", "u-pw", "team")
    ch = conn.channel()
    ch.queue_declare("dq.orders", durable=True)
    for i in range(3):
        sh.publish_confirmed(ch, "", "dq.orders", f"m{i}".encode(),
                             pika.BasicProperties(delivery_mode=2))
    conn.close()
    # Restart without the definitions file: everything must come from the data dir.
    b.extra_args = [a for a in b.extra_args if a != "--load-definitions"
                    and not a.endswith(".json")]
    b.restart(crash=crash)
    _check_after_restart(b, connect, "dq.orders", [b"m0", b"m1", b"m2"])


def test_default_user_survives_restart(start_broker, connect):
    b = start_broker("--default-user", "boss", "--default-pass", "boss-pw")
    ch = connect(b.port, "boss", "boss-pw").channel()
    ch.queue_declare("kept", durable=True)
    b.extra_args = []
    b.restart(crash=True)
    ch = connect(b.port, "boss", "boss-pw").channel()
    assert ch.queue_declare("kept", passive=True).method.queue == "kept"
    with pytest.raises(pex.ProbableAuthenticationError):
        connect(b.port, "guest", "guest")
