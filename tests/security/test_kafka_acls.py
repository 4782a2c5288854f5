"""Kafka ACLs with real clients: CreateAcls / DescribeAcls / DeleteAcls through
confluent-kafka's and kafka-python's admin clients, who may call them (administrators
only: CLUSTER_AUTHORIZATION_FAILED for others), Kafka's validation (INVALID_REQUEST),
enforcement on produce / fetch / metadata / groups next to the vhost permissions (ACLs
decide where a binding covers the resource, vhost permissions elsewhere; DENY wins), and
ACLs surviving a restart and a kill -9."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

import ksec
import sechelpers as sh

pytestmark = pytest.mark.timeout(120)

ALLOW = AclPermissionType.ALLOW
DENY = AclPermissionType.DENY


def defs():
    """admin (administrator, .* on /); writer (write ^wo\\. only); reader (read
    ^(ro\\.|rg\\.) only)."""
    return sh.definitions(
        users=[sh.user("admin", "admin-pw", tags=["administrator"]),
               sh.user("writer", "writer-pw"),
               sh.user("reader", "reader-pw")],
        vhosts=[sh.vhost("/")],
        permissions=[sh.perm("admin", "/"),
                     sh.perm("writer", "/", "^$", r"^wo\.", "^$"),
                     sh.perm("reader", "/", "^$", "^$", r"^(ro\.|rg\.)")])


@pytest.fixture
def kbroker(start_broker):
    return start_broker(defs=defs(), kafka=True)


def sasl(b, user, password):
    return ksec.conf(b.kafka_bootstrap, user, password, "SCRAM-SHA-256")


def topic_acl(name, principal, op, perm=ALLOW, pattern=ResourcePatternType.LITERAL,
              host="*"):
    return AclBinding(ResourceType.TOPIC, name, pattern, principal, host, op, perm)


def create_acls(c, bindings):
    """Creates and returns {binding: None or KafkaError}."""
    a = ksec.admin(c)  # keep the handle alive until the futures resolve
    futs = a.create_acls(bindings, request_timeout=ksec.TIMEOUT)
    out = {}
    for b, f in futs.items():
        try:
            f.result(ksec.TIMEOUT)
            out[b] = None
        except KafkaException as e:
            out[b] = e.args[0]
    return out


def create_ok(c, bindings):
    res = create_acls(c, bindings)
    assert all(e is None for e in res.values()), res


def describe(c, flt):
    a = ksec.admin(c)
    return a.describe_acls(flt, request_timeout=ksec.TIMEOUT).result(ksec.TIMEOUT)


def delete(c, filters):
    a = ksec.admin(c)
    futs = a.delete_acls(filters, request_timeout=ksec.TIMEOUT)
    return [futs[f].result(ksec.TIMEOUT) for f in filters]


def any_filter(rtype=ResourceType.ANY, name=None, pattern=ResourcePatternType.ANY):
    return AclBindingFilter(rtype, name, pattern, None, None, AclOperation.ANY,
                            AclPermissionType.ANY)


def key(b):
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
            b.permission_type)


# ------------------------------------------------------------ admin APIs

def test_create_describe_delete_acls_confluent(kbroker):
    c = sasl(kbroker, "admin", "admin-pw")
    t = ksec.uniq("acl.")
    bindings = [
        topic_acl(t, "User:reader", AclOperation.READ),
        topic_acl(t[:6], "User:writer", AclOperation.WRITE, DENY,
                  ResourcePatternType.PREFIXED),
        AclBinding(ResourceType.GROUP, "g1", ResourcePatternType.LITERAL, "User:*", "*",
                   AclOperation.READ, ALLOW),
        # confluent-kafka calls CLUSTER (4) BROKER.
        AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL,
                   "User:writer", "10.0.0.1", AclOperation.IDEMPOTENT_WRITE, ALLOW),
        AclBinding(ResourceType.TRANSACTIONAL_ID, "tx-", ResourcePatternType.PREFIXED,
                   "User:writer", "*", AclOperation.WRITE, ALLOW),
    ]
    create_ok(c, bindings)
    # Creating the same binding again is fine (kept once).
    create_ok(c, bindings[:1])
    got = describe(c, any_filter())
    assert sorted(map(key, got)) == sorted(map(key, bindings))
    # MATCH: the literal binding on t and the prefixed one whose prefix t starts with.
    got = describe(c, any_filter(ResourceType.TOPIC, t, ResourcePatternType.MATCH))
    assert sorted(map(key, got)) == sorted(map(key, bindings[:2]))
    # LITERAL filter on the prefix: nothing (exact pattern type and name).
    assert describe(c, any_filter(ResourceType.TOPIC, t[:6], ResourcePatternType.LITERAL)) == []
    # Filter on principal and operation.
    f = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:writer", None,
                         AclOperation.WRITE, AclPermissionType.ANY)
    assert sorted(map(key, describe(c, f))) == sorted(map(key, [bindings[1], bindings[4]]))
    # Delete two filters: each reports what it removed.
    f_group = any_filter(ResourceType.GROUP)
    f_topic = any_filter(ResourceType.TOPIC, t, ResourcePatternType.MATCH)
    removed = delete(c, [f_group, f_topic])
    assert list(map(key, removed[0])) == [key(bindings[2])]
    assert sorted(map(key, removed[1])) == sorted(map(key, bindings[:2]))
    left = describe(c, any_filter())
    assert sorted(map(key, left)) == sorted(map(key, bindings[3:]))
    assert delete(c, [f_group]) == [[]]


def test_acl_apis_need_an_administrator(kbroker):
    c = sasl(kbroker, "reader", "reader-pw")
    res = create_acls(c, [topic_acl("ro.x", "User:reader", AclOperation.READ)])
    assert [e.code() for e in res.values()] == [KafkaError.CLUSTER_AUTHORIZATION_FAILED]
    # librdkafka drops DescribeAcls' top-level error (it parses error_code and then
    # ignores it), so confluent-kafka sees no ACLs; kafka-python reports the 31.
    assert describe(c, any_filter()) == []
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType, KafkaAdminClient,
                             ResourcePatternFilter)
    from kafka.admin import ACLResourcePatternType as PT
    from kafka.admin import ResourceType as RT
    from kafka.errors import ClusterAuthorizationFailedError
    a = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap,
                         security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                         sasl_plain_username="reader", sasl_plain_password="reader-pw")
    try:
        with pytest.raises(ClusterAuthorizationFailedError):
            a.describe_acls(ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                                      permission_type=ACLPermissionType.ANY,
                                      resource_pattern=ResourcePatternFilter(RT.ANY, None,
                                                                             PT.ANY)))
    finally:
        a.close()
    with pytest.raises(KafkaException) as e:
        delete(c, [any_filter()])
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert describe(sasl(kbroker, "admin", "admin-pw"), any_filter()) == []


def test_invalid_bindings_get_invalid_request_per_binding(kbroker):
    c = sasl(kbroker, "admin", "admin-pw")
    good = topic_acl("ok.t", "User:a", AclOperation.READ)
    bad_cluster = AclBinding(ResourceType.BROKER, "not-the-cluster",
                             ResourcePatternType.LITERAL, "User:a", "*",
                             AclOperation.ALTER, ALLOW)
    bad_principal = topic_acl("ok.t", "nocolon", AclOperation.READ)
    res = create_acls(c, [good, bad_cluster, bad_principal])
    assert res[good] is None
    assert res[bad_cluster].code() == KafkaError.INVALID_REQUEST
    assert "kafka-cluster" in res[bad_cluster].str()
    assert res[bad_principal].code() == KafkaError.INVALID_REQUEST
    assert list(map(key, describe(c, any_filter()))) == [key(good)]


def test_kafka_python_admin_acls(kbroker):
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        KafkaAdminClient,
        ResourcePattern,
        ResourcePatternFilter,
    )
    from kafka.admin import ACLResourcePatternType as PT
    from kafka.admin import ResourceType as RT
    a = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap,
                         security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                         sasl_plain_username="admin", sasl_plain_password="admin-pw")
    try:
        acl = ACL(principal="User:reader", host="*", operation=ACLOperation.READ,
                  permission_type=ACLPermissionType.ALLOW,
                  resource_pattern=ResourcePattern(RT.TOPIC, "kp.acl", PT.LITERAL))
        res = a.create_acls([acl])
        assert res["failed"] == [] and len(res["succeeded"]) == 1, res
        flt = ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                        permission_type=ACLPermissionType.ANY,
                        resource_pattern=ResourcePatternFilter(RT.TOPIC, "kp.acl", PT.MATCH))
        acls, err = a.describe_acls(flt)
        assert err.errno == 0
        assert [(x.principal, x.operation, x.resource_pattern.resource_name) for x in acls] == \
            [("User:reader", ACLOperation.READ, "kp.acl")]
        deleted = a.delete_acls([flt])
        (f, matches, error), = deleted
        assert error.errno == 0
        assert [m.principal for m in matches] == ["User:reader"]
        acls, err = a.describe_acls(flt)
        assert acls == []
    finally:
        a.close()


# ------------------------------------------------------------ enforcement

def fetch_codes(c, topic, seconds=ksec.TIMEOUT):
    """Assign partition 0 from the beginning and poll: (values, error codes)."""
    errs = ksec.Collected()
    cons = Consumer({**c, "group.id": ksec.uniq("acl.f."), "enable.auto.commit": False,
                     "enable.partition.eof": True, "error_cb": errs})
    values, codes = [], set()
    try:
        cons.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            m = cons.poll(0.2)
            codes |= errs.codes()
            if m is not None:
                if m.error():
                    codes.add(m.error().code())
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        break
                else:
                    values.append(m.value())
            # The group coordinator refusing the group.id this reader does not use.
            codes -= {KafkaError.GROUP_AUTHORIZATION_FAILED}
            if codes - {KafkaError._PARTITION_EOF}:
                break
        return values, codes
    finally:
        cons.close()


def test_deny_read_acl_gives_topic_authorization_failed_and_allow_works(kbroker):
    admin = sasl(kbroker, "admin", "admin-pw")
    reader = sasl(kbroker, "reader", "reader-pw")
    t = ksec.uniq("ro.")
    ksec.create_topic(admin, t)
    ksec.produce_ok(admin, t, [b"a", b"b"])
    # No ACL covers t: the vhost permissions let reader read it.
    assert ksec.read_all(reader, t, 2) == [b"a", b"b"]
    # DESCRIBE allowed, READ denied by ACL: a real consumer gets 29 from Fetch.
    create_ok(admin, [topic_acl(t, "User:reader", AclOperation.DESCRIBE),
                      topic_acl(t, "User:reader", AclOperation.READ, DENY)])
    values, codes = fetch_codes(reader, t)
    assert values == []
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in codes, codes
    # Removing the DENY: the ALLOW DESCRIBE still covers t, and it does not allow READ.
    delete(admin, [AclBindingFilter(ResourceType.TOPIC, t, ResourcePatternType.LITERAL,
                                    "User:reader", None, AclOperation.READ, DENY)])
    values, codes = fetch_codes(reader, t)
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in codes, codes
    # ALLOW READ: reading works again.
    create_ok(admin, [topic_acl(t, "User:reader", AclOperation.READ)])
    assert ksec.read_all(reader, t, 2) == [b"a", b"b"]


def test_allow_acl_grants_beyond_the_vhost_permissions(kbroker):
    admin = sasl(kbroker, "admin", "admin-pw")
    writer = sasl(kbroker, "writer", "writer-pw")
    t = ksec.uniq("shared.")
    ksec.create_topic(admin, t)
    # writer may write ^wo\. only: t is refused and hidden.
    _, errors, _ = ksec.produce(writer, t, [b"x"], timeout=5)
    assert errors and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert t not in ksec.topic_names(writer)
    # A PREFIXED ALLOW WRITE on "shared." for writer: produce works, Metadata shows it
    # (WRITE implies DESCRIBE), READ is still refused.
    create_ok(admin, [topic_acl("shared.", "User:writer", AclOperation.WRITE,
                                pattern=ResourcePatternType.PREFIXED)])
    ksec.produce_ok(writer, t, [b"1", b"2"])
    assert t in ksec.topic_names(writer)
    _, codes = fetch_codes(writer, t)
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in codes, codes
    # DENY wins: a DENY WRITE for everyone on t overrides the prefixed ALLOW.
    create_ok(admin, [topic_acl(t, "User:*", AclOperation.WRITE, DENY)])
    _, errors, _ = ksec.produce(writer, t, [b"x"], timeout=5)
    assert errors and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Administrators are super users: ACLs do not apply to them.
    ksec.produce_ok(admin, t, [b"admin"])
    assert ksec.read_all(admin, t, 3) == [b"1", b"2", b"admin"]


def test_group_acl_denies_the_group(kbroker):
    admin = sasl(kbroker, "admin", "admin-pw")
    reader = sasl(kbroker, "reader", "reader-pw")
    t = ksec.uniq("ro.")
    ksec.create_topic(admin, t)
    ksec.produce_ok(admin, t, [b"v"])
    g = ksec.uniq("rg.")
    create_ok(admin, [AclBinding(ResourceType.GROUP, g, ResourcePatternType.LITERAL,
                                 "User:reader", "*", AclOperation.READ, DENY)])
    values, codes = ksec.group_consume(reader, t, g)
    assert KafkaError.GROUP_AUTHORIZATION_FAILED in codes, codes
    # Another group of the reader's vhost permissions, not covered by ACLs, works.
    values, codes = ksec.group_consume(reader, t, ksec.uniq("rg."), stop_after=1)
    assert values == [b"v"], codes


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "kill9"])
def test_acls_survive_restart(kbroker, crash):
    admin_c = sasl(kbroker, "admin", "admin-pw")
    t = ksec.uniq("ro.")
    ksec.create_topic(admin_c, t)
    ksec.produce_ok(admin_c, t, [b"kept"])
    b = topic_acl(t, "User:reader", AclOperation.ALL, DENY)
    create_ok(admin_c, [b])
    kbroker.restart(crash=crash)
    admin_c = sasl(kbroker, "admin", "admin-pw")
    assert list(map(key, describe(admin_c, any_filter()))) == [key(b)]
    assert ksec.topic_error(sasl(kbroker, "reader", "reader-pw"), t).code() == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    delete(admin_c, [any_filter()])
    kbroker.restart(crash=crash)
    assert describe(sasl(kbroker, "admin", "admin-pw"), any_filter()) == []
    assert ksec.read_all(sasl(kbroker, "reader", "reader-pw"), t, 1) == [b"kept"]


def test_authorized_operations_kip430(kbroker):
    from confluent_kafka import TopicCollection
    admin = sasl(kbroker, "admin", "admin-pw")
    reader = sasl(kbroker, "reader", "reader-pw")
    t = ksec.uniq("ro.")
    ksec.create_topic(admin, t)

    def topic_ops(c):
        a = ksec.admin(c)
        futs = a.describe_topics(TopicCollection([t]), include_authorized_operations=True,
                                 request_timeout=ksec.TIMEOUT)
        return set(futs[t].result(ksec.TIMEOUT).authorized_operations)

    def cluster_ops(c):
        a = ksec.admin(c)
        r = a.describe_cluster(include_authorized_operations=True,
                               request_timeout=ksec.TIMEOUT).result(ksec.TIMEOUT)
        return set(r.authorized_operations or [])

    Op = AclOperation
    # admin has .* on /: every topic operation; administrator: every cluster operation.
    assert topic_ops(admin) == {Op.READ, Op.WRITE, Op.CREATE, Op.DELETE, Op.ALTER,
                                Op.DESCRIBE, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS}
    assert cluster_ops(admin) == {Op.CREATE, Op.ALTER, Op.DESCRIBE, Op.CLUSTER_ACTION,
                                  Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS,
                                  Op.IDEMPOTENT_WRITE}
    # reader: read on ro.* from the vhost permissions.
    assert topic_ops(reader) == {Op.READ, Op.DESCRIBE, Op.DESCRIBE_CONFIGS}
    assert cluster_ops(reader) == set()
    # An ACL covering t decides alone: ALLOW WRITE gives WRITE and DESCRIBE, not READ.
    create_ok(admin, [topic_acl(t, "User:reader", AclOperation.WRITE)])
    assert topic_ops(reader) == {Op.WRITE, Op.DESCRIBE}
    create_ok(admin, [AclBinding(ResourceType.BROKER, "kafka-cluster",
                                 ResourcePatternType.LITERAL, "User:reader", "*",
                                 AclOperation.IDEMPOTENT_WRITE, ALLOW)])
    assert cluster_ops(reader) == {Op.IDEMPOTENT_WRITE}


def test_acls_load_from_definitions_and_export(start_broker):
    import json
    import urllib.request
    d = defs()
    d["kafka_acls"] = [{"vhost": "/", "resource_type": "TOPIC", "resource_name": "ro.",
                        "pattern_type": "PREFIXED", "principal": "User:reader", "host": "*",
                        "operation": "ALL", "permission": "DENY"}]
    b = start_broker(defs=d, kafka=True, http=True)
    admin = sasl(b, "admin", "admin-pw")
    got = describe(admin, any_filter())
    assert list(map(key, got)) == [key(topic_acl("ro.", "User:reader", AclOperation.ALL,
                                                 DENY, ResourcePatternType.PREFIXED))]
    t = ksec.uniq("ro.")
    ksec.create_topic(admin, t)
    assert ksec.topic_error(sasl(b, "reader", "reader-pw"), t).code() == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    # The management API's definitions export carries them.
    req = urllib.request.Request(b.http_url + "/api/definitions")
    import base64
    req.add_header("Authorization", "Basic " + base64.b64encode(b"admin:admin-pw").decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        exported = json.load(r)
    assert exported["kafka_acls"] == d["kafka_acls"]


def test_per_vhost_definitions_carry_that_vhosts_acls(start_broker):
    import base64
    import json
    import urllib.request
    d = defs()
    d["vhosts"].append(sh.vhost("other"))
    acl = {"resource_type": "GROUP", "resource_name": "g", "pattern_type": "LITERAL",
           "principal": "User:*", "host": "*", "operation": "READ", "permission": "ALLOW"}
    d["kafka_acls"] = [{"vhost": "/", **acl},
                       {"vhost": "other", **acl, "resource_name": "o"}]
    b = start_broker(defs=d, kafka=True, http=True)
    auth = "Basic " + base64.b64encode(b"admin:admin-pw").decode()

    def call(path, body=None):
        req = urllib.request.Request(b.http_url + path, data=body,
                                     method="POST" if body else "GET")
        req.add_header("Authorization", auth)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    exported = call("/api/definitions/other")
    # Only that vhost's ACLs, without vhost keys (a per-vhost document).
    assert exported["kafka_acls"] == [{**acl, "resource_name": "o"}]
    # Importing it into / adds the binding there.
    call("/api/definitions/%2F", json.dumps(exported).encode())
    names = sorted(x.name for x in describe(sasl(b, "admin", "admin-pw"), any_filter()))
    assert names == ["g", "o"]
