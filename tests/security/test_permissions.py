"""RabbitMQ's permission table (notes §3), row by row, allowed and refused, with the exact
code and text: channel.close 403 `ACCESS_REFUSED - <perm> access to <queue|exchange> '<n>'
in vhost 'v1' refused for user '<u>'`; the connection stays open (a soft error).

Every test boots its own broker from a definitions file: vhost v1, user `admin` with
`.* .* .*` there (sets up what the others act on) and the users the test needs, each with
password `<name>-pw`. Publishes use publisher confirms so a refusal surfaces at the call.
"""

from __future__ import annotations

from types import SimpleNamespace

import pika
import pika.exceptions as pex
import pytest

import sechelpers as sh

pytestmark = pytest.mark.timeout(60)

V = "v1"


@pytest.fixture
def world(start_broker, connect):
    """world(bob=(configure, write, read), other=(...), ..., topic=[...], tags={...})."""
    def make(topic=(), tags=None, **users):
        tags = tags or {}
        names = ["admin", *users]
        defs = sh.definitions(
            users=[sh.user(n, f"{n}-pw", tags=tags.get(n, ["administrator"] if n == "admin"
                                                       else [])) for n in names],
            vhosts=[sh.vhost(V)],
            permissions=[sh.perm("admin", V)] + [sh.perm(n, V, *p) for n, p in users.items()],
            topic_permissions=list(topic))
        b = start_broker(defs=defs)
        conns: dict[str, pika.BlockingConnection] = {}

        def conn(name):
            if name not in conns or not conns[name].is_open:
                conns[name] = connect(b.port, name, f"{name}-pw", V)
            return conns[name]

        def ch(name="bob"):
            """A fresh channel of `name` (a refusal closes the channel it happens on)."""
            return conn(name).channel()

        def refused(fn, perm, kind, name, user="bob"):
            return sh.assert_channel_refused(
                fn, 403, sh.access_refused(perm, kind, name, V, user), conn=conn(user))

        return SimpleNamespace(broker=b, conn=conn, ch=ch, admin=ch("admin"), refused=refused)
    return make


def exists_queue(w, name) -> bool:
    try:
        w.ch("admin").queue_declare(name, passive=True)
        return True
    except pex.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False


def exists_exchange(w, name) -> bool:
    try:
        w.ch("admin").exchange_declare(name, passive=True)
        return True
    except pex.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False


# ------------------------------------------------------------------ queue.declare

def test_queue_declare_needs_configure(world):
    w = world(bob=(r"^app\.", ".*", ".*"))
    assert w.ch().queue_declare("app.q").method.queue == "app.q"
    w.refused(lambda: w.ch().queue_declare("other.q"), "configure", "queue", "other.q")
    assert not exists_queue(w, "other.q")
    # Re-declaring a queue that exists needs configure too.
    w.admin.queue_declare("other.q2")
    w.refused(lambda: w.ch().queue_declare("other.q2"), "configure", "queue", "other.q2")


def test_permission_regexes_are_unanchored_searches(world):
    w = world(bob=("app", ".*", ".*"))
    w.ch().queue_declare("my.app.queue")
    w.ch().queue_declare("app")
    w.refused(lambda: w.ch().queue_declare("ap.p"), "configure", "queue", "ap.p")


def test_queue_declare_with_dead_letter_exchange_needs_read_on_queue_and_write_on_dlx(world):
    w = world(noread=(".*", ".*", ""),
              nowrite=(".*", r"^nothing$", ".*"),
              ok=(".*", r"^app\.dlx$", r"^app\."))
    w.admin.exchange_declare("app.dlx", "fanout")
    dlx = {"x-dead-letter-exchange": "app.dlx"}
    w.refused(lambda: w.ch("noread").queue_declare("app.q1", arguments=dlx),
              "read", "queue", "app.q1", user="noread")
    w.refused(lambda: w.ch("nowrite").queue_declare("app.q2", arguments=dlx),
              "write", "exchange", "app.dlx", user="nowrite")
    w.ch("ok").queue_declare("app.q3", arguments=dlx)
    assert not exists_queue(w, "app.q1") and not exists_queue(w, "app.q2")
    # Without a dead-letter exchange neither read nor write is needed.
    w.ch("noread").queue_declare("app.q4")
    # The default exchange as DLX is checked as amq.default.
    w.refused(lambda: w.ch("nowrite").queue_declare(
        "app.q5", arguments={"x-dead-letter-exchange": ""}),
        "write", "exchange", "amq.default", user="nowrite")


def test_server_named_queue_needs_configure_on_its_amq_gen_name(world):
    w = world(gen=(r"^amq\.gen-", "", ""), nogen=(r"^app\.", "", ""))
    name = w.ch("gen").queue_declare("", exclusive=True).method.queue
    assert name.startswith("amq.gen-"), name
    sh.assert_channel_refused(
        lambda: w.ch("nogen").queue_declare("", exclusive=True), 403,
        text_re=r"ACCESS_REFUSED - configure access to queue 'amq\.gen-[^']+' in vhost "
                r"'v1' refused for user 'nogen'",
        conn=w.conn("nogen"))


def test_client_named_amq_queue_is_refused(world):
    w = world(bob=(".*", ".*", ".*"))
    sh.assert_channel_refused(
        lambda: w.ch().queue_declare("amq.x"), 403,
        "ACCESS_REFUSED - queue name 'amq.x' contains reserved prefix 'amq.*'",
        conn=w.conn("bob"))


# --------------------------------------------------------------- exchange.declare

def test_exchange_declare_needs_configure(world):
    w = world(bob=(r"^app\.", ".*", ".*"))
    w.ch().exchange_declare("app.x", "direct")
    w.refused(lambda: w.ch().exchange_declare("other.x", "direct"),
              "configure", "exchange", "other.x")
    assert not exists_exchange(w, "other.x")


def test_client_named_amq_exchange_is_refused(world):
    w = world(bob=(".*", ".*", ".*"))
    sh.assert_channel_refused(
        lambda: w.ch().exchange_declare("amq.foo", "direct"), 403,
        "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'",
        conn=w.conn("bob"))


def test_exchange_declare_with_alternate_exchange_needs_read_on_it_and_write_on_ae(world):
    w = world(noread=(".*", ".*", ""),
              nowrite=(".*", r"^nothing$", ".*"),
              ok=(".*", r"^app\.ae$", r"^app\."))
    w.admin.exchange_declare("app.ae", "fanout")
    ae = {"alternate-exchange": "app.ae"}
    w.refused(lambda: w.ch("noread").exchange_declare("app.x1", "direct", arguments=ae),
              "read", "exchange", "app.x1", user="noread")
    w.refused(lambda: w.ch("nowrite").exchange_declare("app.x2", "direct", arguments=ae),
              "write", "exchange", "app.ae", user="nowrite")
    w.ch("ok").exchange_declare("app.x3", "direct", arguments=ae)
    assert not exists_exchange(w, "app.x1") and not exists_exchange(w, "app.x2")
    w.ch("noread").exchange_declare("app.x4", "direct")


# ---------------------------------------------------------------- passive declare

def test_passive_declare_needs_any_one_permission(world):
    # RabbitMQ main (commit 54c97bf): configure, write or read on the resource suffices.
    w = world(c_only=(r"^app\.", "^z$", "^z$"),
              w_only=("^z$", r"^app\.", "^z$"),
              r_only=("^z$", "^z$", r"^app\."),
              none=("^z$", "^z$", "^z$"))
    w.admin.queue_declare("app.q")
    w.admin.exchange_declare("app.x", "direct")
    for u in ("c_only", "w_only", "r_only"):
        assert w.ch(u).queue_declare("app.q", passive=True).method.queue == "app.q"
        w.ch(u).exchange_declare("app.x", passive=True)
    for kind, fn in (("queue", lambda: w.ch("none").queue_declare("app.q", passive=True)),
                     ("exchange", lambda: w.ch("none").exchange_declare("app.x", passive=True))):
        name = "app.q" if kind == "queue" else "app.x"
        sh.assert_channel_refused(
            fn, 403,
            text_re=rf"ACCESS_REFUSED - (configure|write|read) access to {kind} "
                    rf"'{name}' in vhost 'v1' refused for user 'none'",
            conn=w.conn("none"))


# ------------------------------------------------------------------------- delete

def test_queue_delete_needs_configure(world):
    w = world(bob=(r"^app\.", ".*", ".*"), rw=("^z$", ".*", ".*"))
    for q in ("app.q", "app.q2", "other.q"):
        w.admin.queue_declare(q)
    w.ch().queue_delete("app.q")
    assert not exists_queue(w, "app.q")
    w.refused(lambda: w.ch().queue_delete("other.q"), "configure", "queue", "other.q")
    w.refused(lambda: w.ch("rw").queue_delete("app.q2"), "configure", "queue", "app.q2",
              user="rw")
    assert exists_queue(w, "other.q") and exists_queue(w, "app.q2")


def test_exchange_delete_needs_configure(world):
    w = world(bob=(r"^app\.", ".*", ".*"), rw=("^z$", ".*", ".*"))
    for x in ("app.x", "app.x2", "other.x"):
        w.admin.exchange_declare(x, "direct")
    w.ch().exchange_delete("app.x")
    assert not exists_exchange(w, "app.x")
    w.refused(lambda: w.ch().exchange_delete("other.x"), "configure", "exchange", "other.x")
    w.refused(lambda: w.ch("rw").exchange_delete("app.x2"), "configure", "exchange",
              "app.x2", user="rw")
    assert exists_exchange(w, "other.x") and exists_exchange(w, "app.x2")


@pytest.mark.parametrize("name", ["amq.direct", "amq.fanout", "amq.topic", "amq.headers",
                                  "amq.match"])
def test_system_exchanges_cannot_be_deleted(world, name):
    w = world()
    sh.assert_channel_refused(
        lambda: w.ch("admin").exchange_delete(name), 403,
        f"ACCESS_REFUSED - deletion of system exchange '{name}' in vhost 'v1' not allowed",
        conn=w.conn("admin"))
    assert exists_exchange(w, name)


def test_default_exchange_cannot_be_deleted(world):
    w = world()
    sh.assert_channel_refused(
        lambda: w.ch("admin").exchange_delete(""), 403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
        conn=w.conn("admin"))


# ------------------------------------------------------- purge, get and consume (read)

def _two_queues_with_a_message(w):
    for q in ("app.q", "other.q"):
        w.admin.queue_declare(q)
        sh.publish_confirmed(w.admin, "", q, q.encode())


def test_queue_purge_needs_read(world):
    w = world(bob=(".*", ".*", r"^app\."))
    _two_queues_with_a_message(w)
    assert w.ch().queue_purge("app.q").method.message_count == 1
    w.refused(lambda: w.ch().queue_purge("other.q"), "read", "queue", "other.q")
    assert w.ch("admin").queue_declare("other.q", passive=True).method.message_count == 1


def test_basic_get_needs_read(world):
    w = world(bob=("^z$", "^z$", r"^app\."))
    _two_queues_with_a_message(w)
    assert sh.get_body(w.ch(), "app.q") == b"app.q"
    w.refused(lambda: w.ch().basic_get("other.q", auto_ack=True), "read", "queue", "other.q")
    assert sh.get_body(w.ch("admin"), "other.q") == b"other.q"


def test_basic_consume_needs_read(world):
    w = world(bob=("^z$", "^z$", r"^app\."))
    _two_queues_with_a_message(w)
    got = []
    ch = w.ch()
    ch.basic_consume("app.q", lambda c, m, p, body: got.append(body), auto_ack=True)
    sh.wait_until(lambda: (w.conn("bob").process_data_events(0.05), got)[1], timeout=5,
                  what="a delivery to bob's consumer")
    assert got == [b"app.q"]
    w.refused(lambda: w.ch().basic_consume("other.q", lambda *a: None), "read", "queue",
              "other.q")


# ------------------------------------------------------------------------ bindings

def test_queue_bind_needs_write_on_queue_and_read_on_exchange(world):
    w = world(bob=("^z$", r"^app\.q$", r"^app\.x$"))
    for q in ("app.q", "other.q"):
        w.admin.queue_declare(q)
    for x in ("app.x", "other.x"):
        w.admin.exchange_declare(x, "direct")
    w.ch().queue_bind("app.q", "app.x", "k")
    w.refused(lambda: w.ch().queue_bind("other.q", "app.x", "k"), "write", "queue", "other.q")
    w.refused(lambda: w.ch().queue_bind("app.q", "other.x", "k"), "read", "exchange", "other.x")
    # Both missing: the destination's write is checked first.
    w.refused(lambda: w.ch().queue_bind("other.q", "other.x", "k"), "write", "queue", "other.q")
    # The bound route works.
    sh.publish_confirmed(w.admin, "app.x", "k", b"routed")
    assert sh.get_body(w.ch("admin"), "app.q") == b"routed"


def test_queue_unbind_needs_write_on_queue_and_read_on_exchange(world):
    w = world(bob=("^z$", r"^app\.q$", r"^app\.x$"))
    for q in ("app.q", "other.q"):
        w.admin.queue_declare(q)
    for x in ("app.x", "other.x"):
        w.admin.exchange_declare(x, "direct")
    w.admin.queue_bind("app.q", "app.x", "k")
    w.admin.queue_bind("app.q", "other.x", "k")
    w.admin.queue_bind("other.q", "app.x", "k")
    w.ch().queue_unbind("app.q", "app.x", "k")
    w.refused(lambda: w.ch().queue_unbind("app.q", "other.x", "k"), "read", "exchange", "other.x")
    w.refused(lambda: w.ch().queue_unbind("other.q", "app.x", "k"), "write", "queue", "other.q")


def test_binding_to_the_default_exchange_is_refused(world):
    w = world()
    w.admin.queue_declare("app.q")
    sh.assert_channel_refused(
        lambda: w.ch("admin").queue_bind("app.q", "", "k"), 403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
        conn=w.conn("admin"))


def test_exchange_bind_needs_write_on_destination_and_read_on_source(world):
    w = world(bob=("^z$", r"^app\.dst$", r"^app\.src$"))
    for x in ("app.src", "app.dst", "other.src", "other.dst"):
        w.admin.exchange_declare(x, "direct")
    w.ch().exchange_bind(destination="app.dst", source="app.src", routing_key="k")
    w.refused(lambda: w.ch().exchange_bind(destination="other.dst", source="app.src",
                                           routing_key="k"),
              "write", "exchange", "other.dst")
    w.refused(lambda: w.ch().exchange_bind(destination="app.dst", source="other.src",
                                           routing_key="k"),
              "read", "exchange", "other.src")
    # The exchange-to-exchange route works.
    w.admin.queue_declare("app.q")
    w.admin.queue_bind("app.q", "app.dst", "k")
    sh.publish_confirmed(w.admin, "app.src", "k", b"e2e")
    assert sh.get_body(w.ch("admin"), "app.q") == b"e2e"


def test_exchange_unbind_needs_write_on_destination_and_read_on_source(world):
    w = world(bob=("^z$", r"^app\.dst$", r"^app\.src$"))
    for x in ("app.src", "app.dst", "other.src", "other.dst"):
        w.admin.exchange_declare(x, "direct")
    for dst, src in (("app.dst", "app.src"), ("other.dst", "app.src"), ("app.dst", "other.src")):
        w.admin.exchange_bind(destination=dst, source=src, routing_key="k")
    w.ch().exchange_unbind(destination="app.dst", source="app.src", routing_key="k")
    w.refused(lambda: w.ch().exchange_unbind(destination="other.dst", source="app.src",
                                             routing_key="k"),
              "write", "exchange", "other.dst")
    w.refused(lambda: w.ch().exchange_unbind(destination="app.dst", source="other.src",
                                             routing_key="k"),
              "read", "exchange", "other.src")


# ------------------------------------------------------------------------- publish

def test_publish_needs_write_on_the_exchange(world):
    w = world(bob=("^z$", r"^app\.", "^z$"))
    w.admin.exchange_declare("app.x", "direct")
    w.admin.exchange_declare("other.x", "direct")
    w.admin.queue_declare("app.q")
    w.admin.queue_bind("app.q", "app.x", "k")
    sh.publish_confirmed(w.ch(), "app.x", "k", b"allowed")
    assert sh.get_body(w.ch("admin"), "app.q") == b"allowed"
    w.refused(lambda: sh.publish_confirmed(w.ch(), "other.x", "k"), "write", "exchange", "other.x")


def test_write_is_checked_before_the_exchange_is_looked_up(world):
    w = world(bob=("^z$", r"^app\.", "^z$"))
    w.refused(lambda: sh.publish_confirmed(w.ch(), "nope.x", "k"), "write", "exchange", "nope.x")
    sh.assert_channel_refused(lambda: sh.publish_confirmed(w.ch(), "app.missing", "k"), 404,
                              "NOT_FOUND - no exchange 'app.missing' in vhost 'v1'",
                              conn=w.conn("bob"))


def test_default_exchange_is_checked_as_amq_default(world):
    w = world(bob=("^z$", r"^app\.", "^z$"), dflt=("^z$", r"^amq\.default$", "^z$"))
    w.admin.queue_declare("app.q")
    w.refused(lambda: sh.publish_confirmed(w.ch(), "", "app.q"), "write", "exchange",
              "amq.default")
    sh.publish_confirmed(w.ch("dflt"), "", "app.q", b"via default")
    assert sh.get_body(w.ch("admin"), "app.q") == b"via default"


def test_publish_to_an_internal_exchange_is_refused(world):
    w = world(bob=(".*", ".*", ".*"))
    w.admin.exchange_declare("app.int", "fanout", internal=True)
    sh.assert_channel_refused(
        lambda: sh.publish_confirmed(w.ch(), "app.int", ""), 403,
        "ACCESS_REFUSED - cannot publish to internal exchange 'app.int' in vhost 'v1'",
        conn=w.conn("bob"))


# --------------------------------------------------------------- topic permissions

def _topic_world(world, **extra):
    topic = [sh.topic_perm("bob", V, "app.topic", r"^allowed\.", r"^allowed\."),
             sh.topic_perm("bob", V, "amq.topic", r"^allowed\.", r"^allowed\."),
             sh.topic_perm("bob", V, "app.direct", r"^allowed\.", r"^allowed\.")]
    w = world(bob=(".*", ".*", ".*"), topic=topic + list(extra.pop("topic", [])), **extra)
    w.admin.exchange_declare("app.topic", "topic")
    w.admin.exchange_declare("app.topic2", "topic")
    w.admin.exchange_declare("app.direct", "direct")
    w.admin.queue_declare("app.q")
    return w


def test_topic_write_permission_on_routing_key(world):
    w = _topic_world(world)
    w.admin.queue_bind("app.q", "app.topic", "#")
    sh.publish_confirmed(w.ch(), "app.topic", "allowed.1", b"ok")
    assert sh.get_body(w.ch("admin"), "app.q") == b"ok"
    for x in ("app.topic", "amq.topic"):
        sh.assert_channel_refused(
            lambda: sh.publish_confirmed(w.ch(), x, "denied.1"), 403,
            sh.topic_refused("write", "denied.1", x, V, "bob"), conn=w.conn("bob"))
    assert sh.get_body(w.ch("admin"), "app.q", timeout=0.3) is None


@pytest.mark.parametrize("header", ["CC", "BCC"])
def test_topic_write_permission_covers_sender_selected_destinations(world, header):
    w = _topic_world(world)
    props = pika.BasicProperties(headers={header: ["allowed.2", "denied.2"]})
    sh.assert_channel_refused(
        lambda: sh.publish_confirmed(w.ch(), "app.topic", "allowed.1", properties=props), 403,
        sh.topic_refused("write", "denied.2", "app.topic", V, "bob"), conn=w.conn("bob"))
    ok = pika.BasicProperties(headers={header: ["allowed.2", "allowed.3"]})
    sh.publish_confirmed(w.ch(), "app.topic", "allowed.1", properties=ok)


def test_topic_read_permission_on_binding_key(world):
    w = _topic_world(world)
    w.ch().queue_bind("app.q", "app.topic", "allowed.#")
    sh.assert_channel_refused(
        lambda: w.ch().queue_bind("app.q", "app.topic", "denied.#"), 403,
        sh.topic_refused("read", "denied.#", "app.topic", V, "bob"), conn=w.conn("bob"))
    w.admin.exchange_declare("app.dst", "fanout")
    sh.assert_channel_refused(
        lambda: w.ch().exchange_bind(destination="app.dst", source="app.topic",
                                     routing_key="denied.#"), 403,
        sh.topic_refused("read", "denied.#", "app.topic", V, "bob"), conn=w.conn("bob"))


def test_no_topic_permission_row_means_allowed(world):
    w = _topic_world(world)
    w.admin.queue_bind("app.q", "app.topic2", "#")
    sh.publish_confirmed(w.ch(), "app.topic2", "denied.1", b"no row")
    assert sh.get_body(w.ch("admin"), "app.q") == b"no row"
    w.ch().queue_bind("app.q", "app.topic2", "denied.#")


def test_topic_permissions_apply_to_topic_exchanges_only(world):
    w = _topic_world(world)
    w.admin.queue_bind("app.q", "app.direct", "denied.1")
    sh.publish_confirmed(w.ch(), "app.direct", "denied.1", b"direct")
    assert sh.get_body(w.ch("admin"), "app.q") == b"direct"


def test_topic_permission_variables_are_substituted(world):
    topic = [sh.topic_perm("bob", V, "app.user", r"^{username}\.", r"^{username}\."),
             sh.topic_perm("bob", V, "app.vh", r"^{vhost}\.", r"^{vhost}\.")]
    w = world(bob=(".*", ".*", ".*"), topic=topic)
    w.admin.exchange_declare("app.user", "topic")
    w.admin.exchange_declare("app.vh", "topic")
    w.admin.queue_declare("app.q")
    sh.publish_confirmed(w.ch(), "app.user", "bob.orders")
    sh.assert_channel_refused(
        lambda: sh.publish_confirmed(w.ch(), "app.user", "alice.orders"), 403,
        sh.topic_refused("write", "alice.orders", "app.user", V, "bob"), conn=w.conn("bob"))
    w.ch().queue_bind("app.q", "app.user", "bob.#")
    sh.assert_channel_refused(
        lambda: w.ch().queue_bind("app.q", "app.user", "alice.#"), 403,
        sh.topic_refused("read", "alice.#", "app.user", V, "bob"), conn=w.conn("bob"))
    sh.publish_confirmed(w.ch(), "app.vh", "v1.x")
    sh.assert_channel_refused(
        lambda: sh.publish_confirmed(w.ch(), "app.vh", "v2.x"), 403,
        sh.topic_refused("write", "v2.x", "app.vh", V, "bob"), conn=w.conn("bob"))


# ------------------------------------------------------------------------ user-id

def test_user_id_must_match_the_authenticated_user(world):
    w = world(bob=(".*", ".*", ".*"))
    w.admin.queue_declare("app.q")
    sh.publish_confirmed(w.ch(), "", "app.q", b"mine", pika.BasicProperties(user_id="bob"))
    sh.assert_channel_refused(
        lambda: sh.publish_confirmed(w.ch(), "", "app.q", b"forged",
                                     pika.BasicProperties(user_id="alice")), 406,
        "PRECONDITION_FAILED - user_id property set to 'alice' but authenticated user was 'bob'",
        conn=w.conn("bob"))
    method, props, body = w.ch("admin").basic_get("app.q", auto_ack=True)
    assert (body, props.user_id) == (b"mine", "bob")
    assert w.ch("admin").basic_get("app.q", auto_ack=True)[0] is None


def test_impersonator_may_set_another_user_id(world):
    w = world(imp=(".*", ".*", ".*"), tags={"imp": ["impersonator"]})
    w.admin.queue_declare("app.q")
    sh.publish_confirmed(w.ch("imp"), "", "app.q", b"on behalf",
                         pika.BasicProperties(user_id="alice"))
    method, props, body = w.ch("admin").basic_get("app.q", auto_ack=True)
    assert (body, props.user_id) == (b"on behalf", "alice")
    # administrator is not impersonator: tags give no AMQP rights.
    sh.assert_channel_refused(
        lambda: sh.publish_confirmed(w.ch("admin"), "", "app.q", b"x",
                                     pika.BasicProperties(user_id="alice")), 406,
        "PRECONDITION_FAILED - user_id property set to 'alice' but authenticated user was 'admin'",
        conn=w.conn("admin"))
