"""Kafka ACL operations on consumer groups, as Kafka checks them: DescribeGroups and
ConsumerGroupDescribe need DESCRIBE on the group, DeleteGroups and OffsetDelete DELETE
(OffsetDelete READ on the topics too), ListGroups lists the groups the user may DESCRIBE
(all of them with DESCRIBE on the cluster); refusals are GROUP_AUTHORIZATION_FAILED (30).
Where no ACL binding covers a group the vhost permissions decide (read on the group id).
confluent-kafka and kafka-python admin clients over SASL SCRAM, user `plain` (full vhost
permissions, no tags) against ACLs made by `admin`."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

import ksec
from kafka.errors import GroupAuthorizationFailedError

pytestmark = pytest.mark.timeout(180)

ALLOW = AclPermissionType.ALLOW
DENY = AclPermissionType.DENY


def sasl(b, user):
    return ksec.conf(b.kafka_bootstrap, user, f"{user}-pw", "SCRAM-SHA-256")


def group_acl(group, op, perm=ALLOW, principal="User:plain"):
    return AclBinding(ResourceType.GROUP, group, ResourcePatternType.LITERAL, principal,
                      "*", op, perm)


def cluster_acl(op, principal="User:plain"):
    return AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL,
                      principal, "*", op, ALLOW)


def create_ok(c, bindings):
    a = ksec.admin(c)
    for f in a.create_acls(bindings, request_timeout=ksec.TIMEOUT).values():
        f.result(ksec.TIMEOUT)


def committed_group(c, topic, group):
    """A classic group of `plain` with a committed offset on `topic` (Empty once closed)."""
    values, codes = ksec.group_consume(c, topic, group, stop_after=1)
    assert values, codes


def code_of(fut):
    try:
        fut.result(ksec.TIMEOUT)
        return None
    except KafkaException as e:
        return e.args[0].code()


def describe(c, group):
    a = ksec.admin(c)
    return code_of(a.describe_consumer_groups([group], request_timeout=ksec.TIMEOUT)[group])


def delete(c, group):
    a = ksec.admin(c)
    return code_of(a.delete_consumer_groups([group], request_timeout=ksec.TIMEOUT)[group])


def kp_admin(b, user):
    from kafka import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=b.kafka_bootstrap,
                            security_protocol="SASL_PLAINTEXT",
                            sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=user,
                            sasl_plain_password=f"{user}-pw", request_timeout_ms=10000)


def delete_offsets(b, user, group, topic):
    """OffsetDelete with kafka-python (confluent-kafka has no DeleteConsumerGroupOffsets):
    None, or the error class (group-level or of the partition)."""
    from kafka import TopicPartition as KTP
    from kafka import errors as kerr
    a = kp_admin(b, user)
    try:
        out = a.delete_group_offsets(group, [KTP(topic, 0)])
    except kerr.KafkaError as e:
        return type(e)
    finally:
        a.close()
    errs = [e for e in out.values() if e is not kerr.NoError]
    return errs[0] if errs else None


def listed(c):
    a = ksec.admin(c)
    res = a.list_consumer_groups(request_timeout=ksec.TIMEOUT).result(ksec.TIMEOUT)
    return {g.group_id for g in res.valid}


@pytest.fixture
def setup(admin_and_plain):
    b = admin_and_plain
    admin, plain = sasl(b, "admin"), sasl(b, "plain")
    t = ksec.uniq("ga.")
    ksec.create_topic(admin, t)
    ksec.produce_ok(admin, t, [b"v"])
    groups = {n: ksec.uniq(f"g{n}.") for n in ("desc", "hidden", "del", "open")}
    for g in groups.values():
        committed_group(plain, t, g)
    return b, admin, plain, t, groups


def test_describe_and_delete_need_describe_and_delete_on_the_group(setup):
    b, admin, plain, t, g = setup
    # Only DESCRIBE on g[desc]: describing works, deleting it (or its offsets) is refused.
    create_ok(admin, [group_acl(g["desc"], AclOperation.DESCRIBE)])
    assert describe(plain, g["desc"]) is None
    assert delete(plain, g["desc"]) == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert delete_offsets(b, "plain", g["desc"], t) is GroupAuthorizationFailedError
    # DENY DESCRIBE on g[hidden]: describe refused with 30.
    create_ok(admin, [group_acl(g["hidden"], AclOperation.DESCRIBE, DENY)])
    assert describe(plain, g["hidden"]) == KafkaError.GROUP_AUTHORIZATION_FAILED
    # DELETE (which implies DESCRIBE, as in Kafka) on g[del]: offsets then the group go.
    create_ok(admin, [group_acl(g["del"], AclOperation.DELETE)])
    assert describe(plain, g["del"]) is None
    assert delete_offsets(b, "plain", g["del"], t) is None
    assert delete(plain, g["del"]) is None
    # READ alone on the group is not DELETE.
    create_ok(admin, [group_acl(g["open"], AclOperation.READ)])
    assert delete(plain, g["open"]) == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert describe(plain, g["open"]) is None  # READ implies DESCRIBE
    # Administrators are super users.
    assert delete(admin, g["open"]) is None


def test_no_acl_falls_back_to_the_vhost_permissions(setup):
    b, admin, plain, t, g = setup
    # No binding covers these groups: plain's read permission on the vhost decides.
    assert describe(plain, g["open"]) is None
    assert delete_offsets(b, "plain", g["open"], t) is None
    assert delete(plain, g["open"]) is None


def test_list_groups_shows_what_the_user_may_describe(setup):
    _, admin, plain, _, g = setup
    create_ok(admin, [group_acl(g["hidden"], AclOperation.DESCRIBE, DENY),
                      group_acl(g["desc"], AclOperation.DESCRIBE)])
    seen = listed(plain)
    assert g["desc"] in seen and g["open"] in seen, seen
    assert g["hidden"] not in seen, seen
    assert g["hidden"] in listed(admin)
    # DESCRIBE on the cluster lists every group.
    create_ok(admin, [cluster_acl(AclOperation.DESCRIBE)])
    deadline = time.monotonic() + 10
    while g["hidden"] not in listed(plain) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert g["hidden"] in listed(plain)


def test_kafka_python_sees_group_authorization_failed(setup):
    b, admin, plain, _, g = setup
    create_ok(admin, [group_acl(g["hidden"], AclOperation.DESCRIBE, DENY),
                      group_acl(g["desc"], AclOperation.DESCRIBE)])
    kp = kp_admin(b, "plain")
    try:
        groups = kp.list_groups()
        names = {x["group_id"] if isinstance(x, dict) else x[0] for x in groups}
        assert g["desc"] in names and g["hidden"] not in names, names
        with pytest.raises(GroupAuthorizationFailedError):
            kp.describe_groups([g["hidden"]])
        err = dict(kp.delete_groups([g["desc"]]))[g["desc"]]
        assert str(err) == "GroupAuthorizationFailedError", err  # kafka-python gives the name
    finally:
        kp.close()
