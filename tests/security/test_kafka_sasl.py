"""Kafka security with real clients (confluent-kafka, kafka-python, kcat) and raw
requests: SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512 over SASL_PLAINTEXT and SASL_SSL,
SSL with and without a client certificate, authentication failures, RabbitMQ-style
permissions on topics and groups (29 / 30), Metadata hiding, vhosts (`vhost:user`,
--kafka-vhost), unauthenticated loopback clients as guest, and malformed SASL input."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from confluent_kafka import KafkaError

import ksec
import sechelpers as sh
from kafka_wire import (
    API_SASL_AUTHENTICATE,
    API_SASL_HANDSHAKE,
    ILLEGAL_SASL_STATE,
    SASL_AUTHENTICATION_FAILED,
    UNSUPPORTED_SASL_MECHANISM,
    Disconnected,
    KafkaWire,
)

pytestmark = pytest.mark.timeout(90)

MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
KCAT = shutil.which("kcat") or shutil.which("kafkacat")
needs_kcat = pytest.mark.skipif(KCAT is None, reason="kcat is not installed "
                                "(apt-get install -y kcat; .ci/run does it)")


def kafka_defs(**extra):
    """Users (plaintext passwords, so SCRAM credentials exist, except `hashed`):
    admin      .* on / and team
    writer     write ^wo\\. on /                 (write-only)
    reader     read ^(ro\\.|rg\\.) on /          (topics ro.*, groups rg.*)
    hashed     .* on /, imported as a RabbitMQ hash: PLAIN only, no SCRAM
    tu         .* on team only
    alice      passwordless (client certificate), ^alice\\. on /
    """
    return sh.definitions(
        users=[sh.user("admin", "admin-pw", tags=["administrator"]),
               sh.user("writer", "writer-pw"),
               sh.user("reader", "reader-pw"),
               sh.user("hashed", password_hash=sh.rabbit_hash("hashed-pw")),
               sh.user("tu", "tu-pw"),
               sh.user("alice", password_hash=""),
               *extra.pop("users", [])],
        vhosts=[sh.vhost("/"), sh.vhost("team")],
        permissions=[sh.perm("admin", "/"), sh.perm("admin", "team"),
                     sh.perm("writer", "/", "^$", r"^wo\.", "^$"),
                     sh.perm("reader", "/", "^$", "^$", r"^(ro\.|rg\.)"),
                     sh.perm("hashed", "/"),
                     sh.perm("tu", "team"),
                     sh.perm("alice", "/", r"^alice\.", r"^alice\.", r"^alice\."),
                     *extra.pop("permissions", [])],
        **extra)


@pytest.fixture
def kbroker(start_broker):
    """A broker with the users above, Kafka listener on, no TLS."""
    return start_broker(defs=kafka_defs(), kafka=True)


def sasl(b, user, password, mechanism="SCRAM-SHA-256"):
    return ksec.conf(b.kafka_bootstrap, user, password, mechanism)


# ------------------------------------------------------------ SASL round trips

@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_sasl_plaintext_roundtrip_confluent(kbroker, mechanism):
    c = sasl(kbroker, "admin", "admin-pw", mechanism)
    t = ksec.uniq("sasl.")
    ksec.create_topic(c, t)
    values = [f"{mechanism}-{i}".encode() for i in range(20)]
    ksec.produce_ok(c, t, values)
    assert ksec.read_all(c, t, len(values)) == values


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_sasl_plaintext_roundtrip_kafka_python(kbroker, mechanism):
    from kafka import KafkaConsumer, KafkaProducer
    common = dict(bootstrap_servers=kbroker.kafka_bootstrap, security_protocol="SASL_PLAINTEXT",
                  sasl_mechanism=mechanism, sasl_plain_username="admin",
                  sasl_plain_password="admin-pw")
    t = ksec.uniq("kp.")
    ksec.create_topic(sasl(kbroker, "admin", "admin-pw"), t)
    p = KafkaProducer(**common)
    try:
        for i in range(10):
            p.send(t, f"kp-{i}".encode()).get(timeout=15)
    finally:
        p.close(5)
    cons = KafkaConsumer(t, group_id=None, auto_offset_reset="earliest",
                         consumer_timeout_ms=15_000, **common)
    got = []
    try:
        for m in cons:
            got.append(m.value)
            if len(got) == 10:
                break
    finally:
        cons.close()
    assert got == [f"kp-{i}".encode() for i in range(10)]


def test_sasl_ssl_scram_roundtrip(start_broker, tls, pki):
    b = start_broker(defs=kafka_defs(), kafka=True, tls=tls)
    c = ksec.conf(b.kafka_tls_bootstrap, "admin", "admin-pw", "SCRAM-SHA-256",
                  ca=pki["ca"].cert_path)
    t = ksec.uniq("ssl.")
    ksec.create_topic(c, t)
    ksec.produce_ok(c, t, [b"over", b"sasl_ssl"])
    assert ksec.read_all(c, t, 2) == [b"over", b"sasl_ssl"]
    # What went in over TLS reads back on the plaintext listener: same broker, same data.
    assert ksec.read_all(sasl(b, "admin", "admin-pw", "SCRAM-SHA-512"), t, 2) == \
        [b"over", b"sasl_ssl"]


def test_sasl_ssl_kafka_python(start_broker, tls, pki):
    from kafka import KafkaProducer
    b = start_broker(defs=kafka_defs(), kafka=True, tls=tls)
    t = ksec.uniq("kpssl.")
    ksec.create_topic(sasl(b, "admin", "admin-pw"), t)
    p = KafkaProducer(bootstrap_servers=b.kafka_tls_bootstrap, security_protocol="SASL_SSL",
                      ssl_cafile=str(pki["ca"].cert_path), sasl_mechanism="SCRAM-SHA-512",
                      sasl_plain_username="admin", sasl_plain_password="admin-pw")
    try:
        p.send(t, b"kafka-python over tls").get(timeout=15)
    finally:
        p.close(5)
    assert ksec.read_all(sasl(b, "admin", "admin-pw"), t, 1) == [b"kafka-python over tls"]


# --------------------------------------------------------- authentication failures

@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_wrong_password_is_an_authentication_error(kbroker, mechanism):
    codes = ksec.auth_failure(sasl(kbroker, "admin", "wrong-pw", mechanism))
    assert KafkaError._AUTHENTICATION in codes, codes


def test_unknown_user_is_an_authentication_error(kbroker):
    codes = ksec.auth_failure(sasl(kbroker, "nobody", "pw", "SCRAM-SHA-256"))
    assert KafkaError._AUTHENTICATION in codes, codes


def test_wrong_password_over_sasl_ssl(start_broker, tls, pki):
    b = start_broker(defs=kafka_defs(), kafka=True, tls=tls)
    c = ksec.conf(b.kafka_tls_bootstrap, "admin", "nope", "SCRAM-SHA-256",
                  ca=pki["ca"].cert_path)
    codes = ksec.auth_failure(c)
    assert KafkaError._AUTHENTICATION in codes, codes


def test_wrong_password_kafka_python(kbroker):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError as KPError
    with pytest.raises(KPError):
        p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap,
                          security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                          sasl_plain_username="admin", sasl_plain_password="wrong",
                          max_block_ms=10_000)
        try:
            p.send("sec.kp.auth", b"x").get(timeout=10)
        finally:
            p.close(1)


def test_hashed_password_allows_plain_but_not_scram(kbroker):
    # SCRAM credentials exist only for passwords given in plaintext; a RabbitMQ hash can
    # still check a PLAIN password.
    c = sasl(kbroker, "hashed", "hashed-pw", "PLAIN")
    t = ksec.uniq("hashed.")
    ksec.create_topic(c, t)
    ksec.produce_ok(c, t, [b"plain ok"])
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        codes = ksec.auth_failure(sasl(kbroker, "hashed", "hashed-pw", mech))
        assert KafkaError._AUTHENTICATION in codes, (mech, codes)


def test_only_enabled_mechanisms_are_accepted(start_broker):
    b = start_broker("--kafka-sasl-mechanisms", "SCRAM-SHA-256", defs=kafka_defs(), kafka=True)
    for mech in ("PLAIN", "SCRAM-SHA-512"):
        codes = ksec.auth_failure(sasl(b, "admin", "admin-pw", mech),
                                  until={KafkaError._AUTHENTICATION, UNSUPPORTED_SASL_MECHANISM})
        assert codes & {KafkaError._AUTHENTICATION, UNSUPPORTED_SASL_MECHANISM}, (mech, codes)
    c = sasl(b, "admin", "admin-pw", "SCRAM-SHA-256")
    t = ksec.uniq("only256.")
    ksec.create_topic(c, t)
    ksec.produce_ok(c, t, [b"scram-256 still works"])
    with KafkaWire("127.0.0.1", b.kafka_port) as k:
        err, mechs = k.sasl_handshake("PLAIN")
    assert err == UNSUPPORTED_SASL_MECHANISM and mechs == ["SCRAM-SHA-256"], (err, mechs)


# ------------------------------------------------------------------ TLS and SSL

@needs_kcat
def test_kcat_over_ssl_produce_consume(start_broker, tls, pki):
    # No SASL and no client certificate: from loopback this is guest (the default user
    # of a broker without definitions).
    b = start_broker(kafka=True, tls=tls)
    t = ksec.uniq("kcat.")
    ksec.create_topic(ksec.conf(b.kafka_bootstrap), t)
    ssl_args = ["-X", "security.protocol=ssl", "-X", f"ssl.ca.location={pki['ca'].cert_path}"]
    lines = [f"line-{i}" for i in range(25)]
    kcat(b.kafka_tls_bootstrap, *ssl_args, "-P", "-t", t,
         stdin=("\n".join(lines) + "\n").encode())
    out = kcat(b.kafka_tls_bootstrap, *ssl_args, "-C", "-t", t, "-e", "-f", "%s\n")
    assert out.splitlines() == lines


@needs_kcat
def test_kcat_sasl_ssl_scram(start_broker, tls, pki):
    b = start_broker(defs=kafka_defs(), kafka=True, tls=tls)
    t = ksec.uniq("kcatsasl.")
    ksec.create_topic(sasl(b, "admin", "admin-pw"), t)
    args = ["-X", "security.protocol=sasl_ssl", "-X", f"ssl.ca.location={pki['ca'].cert_path}",
            "-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=admin",
            "-X", "sasl.password=admin-pw"]
    kcat(b.kafka_tls_bootstrap, *args, "-P", "-t", t, stdin=b"a\nb\n")
    assert kcat(b.kafka_tls_bootstrap, *args, "-C", "-t", t, "-e", "-f", "%s\n").splitlines() \
        == ["a", "b"]


def kcat(bootstrap: str, *args: str, stdin: bytes | None = None, timeout: float = 40) -> str:
    cmd = [KCAT, "-b", bootstrap, "-m", "15", "-X", "message.timeout.ms=15000", *args]
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.decode()[-2000:]}"
    return r.stdout.decode()


def test_client_certificate_cn_is_the_kafka_user(start_broker, tls, pki):
    b = start_broker(defs=kafka_defs(), kafka=True, tls=tls, verify_peer=True)
    admin = sasl(b, "admin", "admin-pw")
    mine, other = ksec.uniq("alice."), ksec.uniq("other.")
    ksec.create_topic(admin, mine)
    ksec.create_topic(admin, other)
    c = ksec.conf(b.kafka_tls_bootstrap, ca=pki["ca"].cert_path, cert=pki["alice"])
    ksec.produce_ok(c, mine, [b"from alice's certificate"])
    assert ksec.read_all(c, mine, 1, group=ksec.uniq("alice.g.")) == [b"from alice's certificate"]
    _, errors, _ = ksec.produce(c, other, [b"not hers"], timeout=10)
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED], errors
    visible = ksec.topic_names(c)
    assert mine in visible and other not in visible, visible


def test_client_certificate_for_an_unknown_user_gets_nothing(start_broker, tls, pki):
    b = start_broker(defs=kafka_defs(), kafka=True, tls=tls, verify_peer=True)
    t = ksec.uniq("alice.")
    ksec.create_topic(sasl(b, "admin", "admin-pw"), t)
    c = ksec.conf(b.kafka_tls_bootstrap, ca=pki["ca"].cert_path, cert=pki["mallory"])
    delivered, errors, client_errors = ksec.produce(c, t, [b"mallory"], timeout=10)
    assert not delivered, "a certificate without a user must not produce"


def test_ssl_port_requires_a_certificate_with_verify_peer(start_broker, tls, pki):
    b = start_broker(defs=kafka_defs(), kafka=True, tls=tls, verify_peer=True)
    c = ksec.conf(b.kafka_tls_bootstrap, "admin", "admin-pw", ca=pki["ca"].cert_path)
    delivered, errors, client_errors = ksec.produce(c, "sec.nocert", [b"x"], timeout=8)
    assert not delivered
    # With a certificate SASL_SSL works (the SASL user wins over the certificate).
    c = ksec.conf(b.kafka_tls_bootstrap, "admin", "admin-pw", ca=pki["ca"].cert_path,
                  cert=pki["alice"])
    t = ksec.uniq("alice.")
    ksec.create_topic(c, t)  # admin may create; alice's certificate alone could not
    ksec.produce_ok(c, t, [b"sasl over mtls"])


# ------------------------------------------------------------ guest (no SASL)

def test_unauthenticated_loopback_client_is_guest(start_broker):
    b = start_broker(kafka=True)
    c = ksec.conf(b.kafka_bootstrap)
    t = ksec.uniq("guest.")
    ksec.create_topic(c, t)
    ksec.produce_ok(c, t, [b"as guest"])
    assert ksec.read_all(c, t, 1) == [b"as guest"]
    values, codes = ksec.group_consume(c, t, ksec.uniq("guest.g."), stop_after=1)
    assert values == [b"as guest"] and not (codes - {KafkaError._PARTITION_EOF}), codes


def test_unauthenticated_remote_client_is_not_guest(start_broker, external_ip):
    b = start_broker("--bind", "0.0.0.0", kafka=True)
    t = ksec.uniq("guest.")
    ksec.create_topic(ksec.conf(b.kafka_bootstrap), t)
    try:
        with KafkaWire(external_ip, b.kafka_port) as k:
            topics = [name for _err, name in k.metadata_all()]
    except Disconnected:
        return  # refused outright: fine
    assert t not in topics, "an unauthenticated remote client must not act as guest"


# ------------------------------------------------------------------ authorization

def test_write_only_user(kbroker):
    admin = sasl(kbroker, "admin", "admin-pw")
    wo, secret = ksec.uniq("wo."), ksec.uniq("secret.")
    ksec.create_topic(admin, wo)
    ksec.create_topic(admin, secret)
    ksec.produce_ok(admin, secret, [b"classified"])
    w = sasl(kbroker, "writer", "writer-pw")
    # Produce works.
    ksec.produce_ok(w, wo, [b"w1", b"w2"])
    assert ksec.read_all(admin, wo, 2) == [b"w1", b"w2"]
    # Consuming in a group does not.
    values, codes = ksec.group_consume(w, wo, ksec.uniq("wo.g."))
    assert not values, values
    assert codes & {KafkaError.TOPIC_AUTHORIZATION_FAILED,
                    KafkaError.GROUP_AUTHORIZATION_FAILED}, codes
    # All-topics Metadata hides what the user may not touch.
    visible = ksec.topic_names(w)
    assert wo in visible and secret not in visible, visible
    # A named topic without permission: TOPIC_AUTHORIZATION_FAILED, not "unknown".
    err = ksec.topic_error(w, secret)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    # Producing to it fails the same way, and nothing is written.
    _, errors, _ = ksec.produce(w, secret, [b"leak"], timeout=10)
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED], errors
    assert ksec.read_all(admin, secret, 1) == [b"classified"]


def test_read_only_user_and_group_permission(kbroker):
    admin = sasl(kbroker, "admin", "admin-pw")
    ro = ksec.uniq("ro.")
    ksec.create_topic(admin, ro)
    ksec.produce_ok(admin, ro, [b"r1", b"r2"])
    r = sasl(kbroker, "reader", "reader-pw")
    # A group the user may read: consume and commit work.
    values, codes = ksec.group_consume(r, ro, ksec.uniq("rg.ok."), stop_after=2)
    assert values == [b"r1", b"r2"], (values, codes)
    # A group id without read permission: GROUP_AUTHORIZATION_FAILED (30).
    values, codes = ksec.group_consume(r, ro, ksec.uniq("other.g."))
    assert not values and KafkaError.GROUP_AUTHORIZATION_FAILED in codes, (values, codes)
    # Producing needs write: TOPIC_AUTHORIZATION_FAILED (29).
    _, errors, _ = ksec.produce(r, ro, [b"nope"], timeout=10)
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED], errors


def test_create_and_delete_topics_need_configure(kbroker):
    admin = sasl(kbroker, "admin", "admin-pw")
    w = sasl(kbroker, "writer", "writer-pw")
    name = ksec.uniq("wo.")
    err = ksec.create_topic_error(w, name)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    assert name not in ksec.topic_names(admin)
    ksec.create_topic(admin, name)
    err = ksec.delete_topic_error(w, name)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    assert name in ksec.topic_names(admin)
    assert ksec.delete_topic_error(admin, name) is None


def test_auto_create_needs_configure(kbroker):
    # The writer may write ^wo\. but not configure: producing to a missing topic must
    # not create it.
    admin = sasl(kbroker, "admin", "admin-pw")
    name = ksec.uniq("wo.auto.")
    delivered, errors, _ = ksec.produce(sasl(kbroker, "writer", "writer-pw"), name, [b"x"],
                                        timeout=8)
    assert not delivered
    assert name not in ksec.topic_names(admin)


# ------------------------------------------------------------------------ vhosts

def test_vhost_colon_user_picks_another_vhost(kbroker):
    root = sasl(kbroker, "admin", "admin-pw")
    team = sasl(kbroker, "team:admin", "admin-pw", "SCRAM-SHA-512")
    tu = sasl(kbroker, "team:tu", "tu-pw", "PLAIN")
    shared, root_only = ksec.uniq("shared."), ksec.uniq("rootonly.")
    ksec.create_topic(root, shared)
    ksec.create_topic(root, root_only)
    ksec.create_topic(team, shared, partitions=2)
    ksec.produce_ok(root, shared, [b"in /"])
    ksec.produce_ok(tu, shared, [b"in team"])
    assert ksec.read_all(root, shared, 1) == [b"in /"]
    assert ksec.read_all(tu, shared, 1) == [b"in team"]
    assert ksec.read_all(team, shared, 1) == [b"in team"]
    assert len(ksec.admin(tu).list_topics(topic=shared, timeout=15).topics[shared].partitions) == 2
    team_topics = ksec.topic_names(tu)
    assert shared in team_topics and root_only not in team_topics, team_topics
    # tu has no permissions on "/": without the prefix it is refused or sees nothing.
    delivered, errors, client_errors = ksec.produce(sasl(kbroker, "tu", "tu-pw"), shared,
                                                    [b"x"], timeout=8)
    assert not delivered
    assert ksec.read_all(root, shared, 1) == [b"in /"]


def test_kafka_vhost_flag_sets_the_default_vhost(start_broker):
    b = start_broker("--kafka-vhost", "team", defs=kafka_defs(), kafka=True)
    tu = sasl(b, "tu", "tu-pw")
    t = ksec.uniq("teamdefault.")
    ksec.create_topic(tu, t)
    ksec.produce_ok(tu, t, [b"team by default"])
    # The same topic through an explicit prefix is the same topic.
    assert ksec.read_all(sasl(b, "team:admin", "admin-pw"), t, 1) == [b"team by default"]
    # And "/" is still reachable with a prefix.
    assert t not in ksec.topic_names(sasl(b, "/:admin", "admin-pw"))


# --------------------------------------------------------------- raw SASL input

def test_api_versions_advertise_sasl(kbroker):
    with KafkaWire("127.0.0.1", kbroker.kafka_port) as k:
        v = k.api_versions()
    assert v[API_SASL_HANDSHAKE][0] <= 0 and v[API_SASL_HANDSHAKE][1] >= 1, v.get(17)
    assert v[API_SASL_AUTHENTICATE][0] <= 0 and v[API_SASL_AUTHENTICATE][1] >= 2, v.get(36)


def test_unknown_mechanism_lists_the_enabled_ones(kbroker):
    with KafkaWire("127.0.0.1", kbroker.kafka_port) as k:
        err, mechs = k.sasl_handshake("GSSAPI")
    assert err == UNSUPPORTED_SASL_MECHANISM
    assert sorted(mechs) == sorted(MECHANISMS), mechs


def test_raw_plain_and_scram_succeed_and_then_serve_requests(kbroker):
    admin = sasl(kbroker, "admin", "admin-pw")
    t = ksec.uniq("raw.")
    ksec.create_topic(admin, t)
    with KafkaWire("127.0.0.1", kbroker.kafka_port) as k:
        res = k.plain("admin", "admin-pw")
        assert res.error_code == 0, res
        assert t in [name for _e, name in k.metadata_all()]
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        with KafkaWire("127.0.0.1", kbroker.kafka_port) as k:
            res = k.scram(mech, "admin", "admin-pw")  # also checks the server signature
            assert res.error_code == 0, (mech, res)
            assert t in [name for _e, name in k.metadata_all()]
    with KafkaWire("127.0.0.1", kbroker.kafka_port) as k:  # authzid = the user is fine
        assert k.plain("admin", "admin-pw", authzid="admin").error_code == 0


def _refused_or_closed(fn) -> int | None:
    """Run a raw exchange; the error code it returned, or None if the server hung up."""
    try:
        return fn()
    except Disconnected:
        return None


@pytest.mark.parametrize("case", ["wrong-proof", "wrong-nonce", "wrong-password",
                                  "garbage-first", "plain-garbage", "plain-other-authzid",
                                  "huge-token"])
def test_malformed_or_wrong_sasl_is_refused(kbroker, case):
    def run():
        with KafkaWire("127.0.0.1", kbroker.kafka_port) as k:
            if case == "wrong-proof":
                return k.scram("SCRAM-SHA-256", "admin", "admin-pw", tamper_proof=True).error_code
            if case == "wrong-nonce":
                return k.scram("SCRAM-SHA-512", "admin", "admin-pw", tamper_nonce=True).error_code
            if case == "wrong-password":
                return k.scram("SCRAM-SHA-256", "admin", "nope").error_code
            if case == "garbage-first":
                assert k.sasl_handshake("SCRAM-SHA-256")[0] == 0
                return k.sasl_authenticate(b"\xff\xfe\x00garbage,,,=").error_code
            if case == "plain-garbage":
                assert k.sasl_handshake("PLAIN")[0] == 0
                return k.sasl_authenticate(b"no separators at all").error_code
            if case == "plain-other-authzid":
                return k.plain("admin", "admin-pw", authzid="writer").error_code
            if case == "huge-token":
                assert k.sasl_handshake("PLAIN")[0] == 0
                return k.sasl_authenticate(b"\0admin\0" + b"x" * (1 << 20)).error_code
    code = _refused_or_closed(run)
    assert code in (SASL_AUTHENTICATION_FAILED, None), code
    if case != "huge-token":
        assert code == SASL_AUTHENTICATION_FAILED, code
    # The broker is fine and serves other clients.
    c = sasl(kbroker, "admin", "admin-pw")
    t = ksec.uniq("after.")
    ksec.create_topic(c, t)
    ksec.produce_ok(c, t, [b"still serving"])


def test_requests_before_authentication_are_refused(kbroker):
    # After SaslHandshake the next request must be SaslAuthenticate: anything else is
    # ILLEGAL_SASL_STATE (34) or a disconnect, never served.
    def run():
        with KafkaWire("127.0.0.1", kbroker.kafka_port) as k:
            assert k.sasl_handshake("PLAIN")[0] == 0
            code = k.list_groups()
            return code if code != 0 else "served"
    code = _refused_or_closed(run)
    assert code in (ILLEGAL_SASL_STATE, None), code

    # SaslAuthenticate without a handshake first.
    def run2():
        with KafkaWire("127.0.0.1", kbroker.kafka_port) as k:
            return k.sasl_authenticate(b"\0admin\0admin-pw").error_code
    code = _refused_or_closed(run2)
    assert code in (ILLEGAL_SASL_STATE, None), code

    # A failed authentication does not leave a usable session behind.
    c = sasl(kbroker, "admin", "admin-pw")
    t = ksec.uniq("after.")
    ksec.create_topic(c, t)

    def run3():
        with KafkaWire("127.0.0.1", kbroker.kafka_port) as k:
            assert k.plain("admin", "wrong").error_code == SASL_AUTHENTICATION_FAILED
            return [name for _e, name in k.metadata_all()]
    try:
        topics = run3()
        assert t not in topics, "a session whose authentication failed was served"
    except Disconnected:
        pass
    ksec.produce_ok(c, t, [b"still serving"])
