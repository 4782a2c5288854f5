"""--load-definitions: a RabbitMQ-format definitions JSON imported at boot (users with
password hashes or plaintext passwords, tags as a list or a comma string, vhosts,
permissions, topic permissions, vhost limits, policies, exchanges, queues, bindings);
a bad file stops the broker with a message naming the file; with definitions, no guest."""

from __future__ import annotations

import json
from pathlib import Path

import pika
import pika.exceptions as pex
import pytest

import sechelpers as sh
from ferrybroker import BrokerStartError

pytestmark = pytest.mark.timeout(60)


def exported(**overrides):
    """What `rabbitmqctl export_definitions` writes for a small application: vhost `app`,
    users with RabbitMQ hashes, an orders flow with an exchange-to-exchange binding, a
    max-length policy, and the amq.* exchanges an export may carry (skipped on import)."""
    d = sh.definitions(
        users=[
            sh.user("ops", password_hash=sh.TEST12_HASH, tags=["administrator"]),
            sh.user("svc", password_hash=sh.rabbit_hash("svc-secret"), tags=[]),
        ],
        vhosts=[sh.vhost("/"), {"name": "app", "description": "orders", "tags": [],
                                "metadata": {"description": "orders", "tags": []}}],
        permissions=[sh.perm("ops", "/"), sh.perm("ops", "app"),
                     sh.perm("svc", "app", "^$", r"^orders\.x$|^amq\.default$", r"^orders")],
        policies=[{"vhost": "app", "name": "cap", "pattern": "^orders\\.capped$",
                   "apply-to": "queues", "priority": 0,
                   "definition": {"max-length": 1}}],
        exchanges=[
            sh.exchange("orders.x", "app", "direct"),
            sh.exchange("audit.x", "app", "fanout"),
            sh.exchange("amq.direct", "app", "direct"),
        ],
        queues=[
            sh.queue("orders", "app"),
            sh.queue("orders.audit", "app"),
            sh.queue("orders.capped", "app"),
            sh.queue("orders.short", "app", arguments={"x-max-length": 2}),
        ],
        bindings=[
            sh.binding("orders.x", "app", "orders", "new"),
            sh.binding("orders.x", "app", "audit.x", "new", destination_type="exchange"),
            sh.binding("audit.x", "app", "orders.audit", ""),
            sh.binding("orders.x", "app", "orders.capped", "capped"),
            sh.binding("orders.x", "app", "orders.short", "short"),
        ],
    )
    d.update(overrides)
    return d


def test_known_rabbitmq_hash_of_test12_logs_in(start_broker, connect):
    b = start_broker(defs=exported())
    conn = connect(b.port, "ops", "test12", "app")
    assert conn.is_open
    with pytest.raises(pex.ProbableAuthenticationError) as ei:
        connect(b.port, "ops", "test13", "app")
    assert "403" in sh.unwrap(ei.value)


@pytest.mark.parametrize("algorithm", ["rabbit_password_hashing_sha256",
                                       "rabbit_password_hashing_sha512",
                                       "rabbit_password_hashing_md5"])
def test_each_rabbitmq_hashing_algorithm(start_broker, connect, algorithm):
    defs = sh.definitions(
        users=[sh.user("h", password_hash=sh.rabbit_hash("h-pw", algorithm), algorithm=algorithm)],
        vhosts=[sh.vhost("/")], permissions=[sh.perm("h", "/")])
    b = start_broker(defs=defs)
    connect(b.port, "h", "h-pw").channel().queue_declare("", exclusive=True)
    with pytest.raises(pex.ProbableAuthenticationError):
        connect(b.port, "h", "h-pw2")


def test_plaintext_password_field(start_broker, connect):
    defs = sh.definitions(users=[sh.user("p", "plain-pw")], vhosts=[sh.vhost("/")],
                          permissions=[sh.perm("p", "/")])
    b = start_broker(defs=defs)
    connect(b.port, "p", "plain-pw")
    with pytest.raises(pex.ProbableAuthenticationError):
        connect(b.port, "p", "plain-pw ")


def test_topology_from_the_file(start_broker, connect):
    b = start_broker(defs=exported())
    conn = connect(b.port, "ops", "test12", "app")
    ch = conn.channel()
    for q in ("orders", "orders.audit", "orders.capped", "orders.short"):
        assert ch.queue_declare(q, passive=True).method.queue == q
    for x in ("orders.x", "audit.x"):
        ch.exchange_declare(x, passive=True)
    # Durable as exported: an equivalent declare passes, a non-durable one does not.
    ch.queue_declare("orders", durable=True)
    sh.assert_channel_refused(lambda: conn.channel().queue_declare("orders", durable=False),
                              406, text_re=r"PRECONDITION_FAILED - inequivalent arg 'durable' "
                                           r"for queue 'orders' in vhost 'app'.*", conn=conn)
    # The bindings route, including the exchange-to-exchange one.
    sh.publish_confirmed(ch, "orders.x", "new", b"order-1")
    assert sh.get_body(ch, "orders") == b"order-1"
    assert sh.get_body(ch, "orders.audit") == b"order-1"
    # The policy (max-length 1) and the queue argument (x-max-length 2) apply.
    for i in range(3):
        sh.publish_confirmed(ch, "orders.x", "capped", f"c{i}".encode())
        sh.publish_confirmed(ch, "orders.x", "short", f"s{i}".encode())
    assert sh.drain_bodies(ch, "orders.capped") == [b"c2"]
    assert sh.drain_bodies(ch, "orders.short") == [b"s1", b"s2"]
    # Nothing leaked into the default vhost.
    root = connect(b.port, "ops", "test12", "/")
    sh.assert_channel_refused(lambda: root.channel().queue_declare("orders", passive=True),
                              404, "NOT_FOUND - no queue 'orders' in vhost '/'", conn=root)


def test_permissions_from_the_file(start_broker, connect):
    b = start_broker(defs=exported())
    conn = connect(b.port, "svc", "svc-secret", "app")
    sh.publish_confirmed(conn.channel(), "orders.x", "new", b"from svc")
    assert sh.get_body(conn.channel(), "orders") == b"from svc"
    sh.assert_channel_refused(lambda: conn.channel().queue_declare("svc.q"), 403,
                              sh.access_refused("configure", "queue", "svc.q", "app", "svc"),
                              conn=conn)
    sh.assert_channel_refused(lambda: sh.publish_confirmed(conn.channel(), "audit.x", ""), 403,
                              sh.access_refused("write", "exchange", "audit.x", "app", "svc"),
                              conn=conn)
    with pytest.raises(pex.ProbableAccessDeniedError):
        connect(b.port, "svc", "svc-secret", "/")


def test_topic_permissions_and_limits_from_the_file(start_broker, connect):
    defs = sh.definitions(
        users=[sh.user("t", "t-pw", limits={"max-connections": 5})],
        vhosts=[sh.vhost("v")],
        permissions=[sh.perm("t", "v")],
        topic_permissions=[sh.topic_perm("t", "v", "amq.topic", r"^ok\.", r"^ok\.")],
        parameters=[sh.vhost_limits("v", max_queues=1)])
    b = start_broker(defs=defs)
    conn = connect(b.port, "t", "t-pw", "v")
    sh.publish_confirmed(conn.channel(), "amq.topic", "ok.1")
    sh.assert_channel_refused(lambda: sh.publish_confirmed(conn.channel(), "amq.topic", "no.1"),
                              403, sh.topic_refused("write", "no.1", "amq.topic", "v", "t"),
                              conn=conn)
    conn.channel().queue_declare("only")
    sh.assert_channel_refused(
        lambda: conn.channel().queue_declare("second"), 406,
        "PRECONDITION_FAILED - cannot declare queue 'second': queue limit in vhost 'v' (1) is reached",
        conn=conn)


@pytest.mark.parametrize("form", ["list", "comma string"])
def test_tags_as_list_or_comma_string(start_broker, connect, form):
    # `impersonator` is the tag with an AMQP effect: it may publish another user_id.
    tags = ["administrator", "impersonator"] if form == "list" else "administrator,impersonator"
    defs = sh.definitions(
        users=[sh.user("imp", "imp-pw", tags=tags), sh.user("plain", "plain-pw", tags="")],
        vhosts=[sh.vhost("/")],
        permissions=[sh.perm("imp", "/"), sh.perm("plain", "/")])
    b = start_broker(defs=defs)
    ch = connect(b.port, "imp", "imp-pw").channel()
    ch.queue_declare("tagged")
    sh.publish_confirmed(ch, "", "tagged", b"x", pika.BasicProperties(user_id="someone"))
    conn = connect(b.port, "plain", "plain-pw")
    sh.assert_channel_refused(
        lambda: sh.publish_confirmed(conn.channel(), "", "tagged", b"x",
                                     pika.BasicProperties(user_id="someone")), 406,
        "PRECONDITION_FAILED - user_id property set to 'someone' but authenticated user was 'plain'",
        conn=conn)


def test_no_guest_when_definitions_are_loaded(start_broker, connect):
    b = start_broker(defs=exported())
    with pytest.raises(pex.ProbableAuthenticationError) as ei:
        connect(b.port, "guest", "guest")
    assert "403" in sh.unwrap(ei.value)


def test_guest_defined_in_the_file_is_still_loopback_only(start_broker, connect, external_ip):
    defs = sh.definitions(users=[sh.user("guest", "guest", tags=["administrator"])],
                          vhosts=[sh.vhost("/")], permissions=[sh.perm("guest", "/")])
    b = start_broker("--bind", "0.0.0.0", defs=defs)
    connect(b.port, "guest", "guest")
    with pytest.raises(pex.ProbableAuthenticationError):
        connect(b.port, "guest", "guest", host=external_ip)


def test_reimport_on_restart_is_idempotent(start_broker, connect):
    # The same file at every boot (as RabbitMQ's load_definitions): no duplicates, no
    # error, and messages in the imported queues are kept.
    b = start_broker(defs=exported())
    ch = connect(b.port, "ops", "test12", "app").channel()
    sh.publish_confirmed(ch, "orders.x", "new", b"kept", pika.BasicProperties(delivery_mode=2))
    b.restart()
    ch = connect(b.port, "ops", "test12", "app").channel()
    assert ch.queue_declare("orders", passive=True).method.message_count == 1
    assert sh.get_body(ch, "orders") == b"kept"


# ------------------------------------------------------------------------ bad files

@pytest.mark.parametrize("content", [
    '{"users": [',                                            # truncated JSON
    '[]',                                                     # not an object
    json.dumps({"users": [{"name": "x", "password": "a",      # both password and hash
                           "password_hash": sh.TEST12_HASH, "tags": []}]}),
    json.dumps({"users": [{"name": "x", "password_hash": "!!not base64!!",
                           "hashing_algorithm": "rabbit_password_hashing_sha256",
                           "tags": []}]}),
    json.dumps({"users": [{"name": "x", "password_hash": sh.TEST12_HASH,
                           "hashing_algorithm": "rabbit_password_hashing_rot13",
                           "tags": []}]}),
    json.dumps({"queues": [{"name": "q", "vhost": "no-such-vhost", "durable": True,
                            "auto_delete": False, "arguments": {}}]}),
], ids=["truncated", "not-an-object", "password-and-hash", "bad-base64", "unknown-algorithm",
        "queue-in-missing-vhost"])
def test_invalid_definitions_stop_the_broker_naming_the_file(make_broker, tmp_path, content):
    path = tmp_path / "bad-defs.json"
    path.write_text(content)
    rc, out = make_broker("--load-definitions", str(path)).run_to_exit(timeout=20)
    assert rc is not None, f"the broker kept running with an invalid definitions file:\n{out}"
    assert rc != 0, f"exit code 0 with an invalid definitions file:\n{out}"
    assert path.name in out, f"the error does not name the file:\n{out}"
    assert "amqp listening" not in out, f"listeners opened before the import failed:\n{out}"


def test_missing_definitions_file_stops_the_broker(make_broker, tmp_path):
    path = tmp_path / "does-not-exist.json"
    rc, out = make_broker("--load-definitions", str(path)).run_to_exit(timeout=20)
    assert rc not in (None, 0), out
    assert path.name in out, out


def test_invalid_permission_regex_is_refused_or_denies(make_broker, connect):
    # RabbitMQ 3.10 skips the bad permission row (so the user has no access to the vhost,
    # 530); FerryMQ may instead refuse the file, or store it and deny what it guards. Any
    # of these is safe; granting access is not.
    defs = sh.definitions(users=[sh.user("r", "r-pw")], vhosts=[sh.vhost("/")],
                          permissions=[sh.perm("r", "/", "(unclosed", "(unclosed", "(unclosed")])
    b = make_broker(defs=defs)
    try:
        b.start()
    except BrokerStartError as e:  # it refused the file: fine if it says which
        defs_file = Path(b.extra_args[b.extra_args.index("--load-definitions") + 1])
        assert defs_file.name in str(e), str(e)
        return
    try:
        conn = connect(b.port, "r", "r-pw")
    except pex.ProbableAccessDeniedError as e:  # the row was dropped: no vhost access
        assert sh.vhost_refused("/", "r") in sh.unwrap(e), sh.unwrap(e)
        return
    sh.assert_channel_refused(lambda: conn.channel().queue_declare("(unclosed"), 403,
                              sh.access_refused("configure", "queue", "(unclosed", "/", "r"),
                              conn=conn)
