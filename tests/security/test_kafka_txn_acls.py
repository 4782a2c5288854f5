"""Kafka ACLs on transactional ids (issue 11), as Kafka's authorizer applies them:
WRITE on TRANSACTIONAL_ID for InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn,
TxnOffsetCommit, EndTxn and a transactional Produce (TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
53); READ on the GROUP for AddOffsetsToTxn / TxnOffsetCommit (30) and on each topic of
TxnOffsetCommit (29 per partition); DESCRIBE on the id for FindCoordinator,
DescribeTransactions (53 per id) and ListTransactions (filtered). Real clients
(confluent-kafka's transactional producer, kafka-python's admin) plus raw requests for the
answers a well-behaved client never provokes one at a time. Users from the
`admin_and_plain` fixture: `admin` (administrator) and `plain` (no tags, full vhost
permissions), SASL PLAIN."""

from __future__ import annotations

import struct
import time

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)
from kafka import KafkaAdminClient
from kafka import errors as kerrors
from kafka.record.default_records import DefaultRecordBatchBuilder

import ksec
from kafka_wire import KafkaWire, Reader, _str

pytestmark = pytest.mark.timeout(120)

ALLOW = AclPermissionType.ALLOW
DENY = AclPermissionType.DENY
LITERAL = ResourcePatternType.LITERAL

TXN_DENIED = 53
GROUP_DENIED = 30
TOPIC_DENIED = 29


def sasl(b, user):
    return ksec.conf(b.kafka_bootstrap, user, f"{user}-pw", "PLAIN")


def acl(rtype, name, principal, op, perm=ALLOW, pattern=LITERAL):
    return AclBinding(rtype, name, pattern, principal, "*", op, perm)


def txn_acl(name, op=AclOperation.WRITE, perm=ALLOW, principal="User:plain",
            pattern=LITERAL):
    return acl(ResourceType.TRANSACTIONAL_ID, name, principal, op, perm, pattern)


def create_ok(admin_c, bindings):
    a = ksec.admin(admin_c)
    futs = a.create_acls(bindings, request_timeout=ksec.TIMEOUT)
    for f in futs.values():
        f.result(ksec.TIMEOUT)


def delete_ok(admin_c, bindings):
    filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal,
                                b.host, b.operation, b.permission_type) for b in bindings]
    a = ksec.admin(admin_c)
    futs = a.delete_acls(filters, request_timeout=ksec.TIMEOUT)
    for f in futs.values():
        f.result(ksec.TIMEOUT)


def txn_producer(c, tid):
    return Producer({**c, "transactional.id": tid, "linger.ms": 5,
                     "transaction.timeout.ms": 60000})


def error_code(exc: KafkaException) -> KafkaError:
    return exc.args[0]


# ------------------------------------------------------------ raw requests

class TxnWire(KafkaWire):
    """Non-flexible versions of the transactional APIs (request header v1)."""

    def init_producer_id(self, tid: str) -> tuple[int, int, int]:
        r = self.request(22, 1, _str(tid) + struct.pack(">i", 60000))
        r.int32()  # throttle
        return r.int16(), r.int64(), r.int16()

    def add_partitions(self, tid, pid, epoch, topics: dict[str, list[int]]) -> dict:
        body = _str(tid) + struct.pack(">qhi", pid, epoch, len(topics))
        for t, parts in topics.items():
            body += _str(t) + struct.pack(">i", len(parts))
            body += b"".join(struct.pack(">i", p) for p in parts)
        r = self.request(24, 1, body)
        r.int32()
        return _per_partition(r)

    def add_offsets(self, tid, pid, epoch, group) -> int:
        r = self.request(25, 1, _str(tid) + struct.pack(">qh", pid, epoch) + _str(group))
        r.int32()
        return r.int16()

    def txn_offset_commit(self, tid, pid, epoch, group, topics: dict[str, list[int]]) -> dict:
        body = _str(tid) + _str(group) + struct.pack(">qhi", pid, epoch, len(topics))
        for t, parts in topics.items():
            body += _str(t) + struct.pack(">i", len(parts))
            for p in parts:
                body += struct.pack(">iqi", p, 1, -1) + _str(None)
        r = self.request(28, 2, body)
        r.int32()
        return _per_partition(r)

    def end_txn(self, tid, pid, epoch, commit: bool) -> int:
        r = self.request(26, 1, _str(tid) + struct.pack(">qhb", pid, epoch, int(commit)))
        r.int32()
        return r.int16()

    def produce_txn(self, tid, pid, epoch, seq, topic) -> int:
        b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=True,
                                      producer_id=pid, producer_epoch=epoch,
                                      base_sequence=seq, batch_size=1 << 20)
        b.append(0, timestamp=int(time.time() * 1000), key=None, value=b"v", headers=[])
        records = bytes(b.build())
        body = (_str(tid) + struct.pack(">hii", -1, 10000, 1) + _str(topic)
                + struct.pack(">ii", 1, 0) + struct.pack(">i", len(records)) + records)
        r = self.request(0, 3, body)
        r.int32()  # one topic
        r.string()
        r.int32()  # one partition
        r.int32()
        return r.int16()

    def find_txn_coordinator(self, tid) -> int:
        r = self.request(10, 1, _str(tid) + struct.pack(">b", 1))
        r.int32()
        return r.int16()


def _per_partition(r: Reader) -> dict:
    out = {}
    for name, parts in r.array(lambda: (r.string(), r.array(lambda: (r.int32(), r.int16())))):
        for p, e in parts:
            out[(name, p)] = e
    return out


def wire(b, user) -> TxnWire:
    host, port = b.kafka_bootstrap.rsplit(":", 1)
    w = TxnWire(host, int(port))
    res = w.plain(user, f"{user}-pw")
    assert res.error_code == 0, res
    return w


def eventually(f, expect, what, timeout=10.0):
    """ACL changes apply to a connection's next request; the admin's CreateAcls answer
    comes after the store write, so this normally passes at once."""
    deadline = time.monotonic() + timeout
    while True:
        got = f()
        if got == expect or time.monotonic() > deadline:
            assert got == expect, f"{what}: {got} != {expect}"
            return
        time.sleep(0.1)


def test_each_transactional_api_needs_write_on_the_transactional_id(admin_and_plain):
    b = admin_and_plain
    admin_c = sasl(b, "admin")
    t = ksec.uniq("txacl.")
    ksec.create_topic(admin_c, t)
    tid = ksec.uniq("tid.")
    g = ksec.uniq("g.")
    with wire(b, "plain") as w:
        # No ACL on the id: the vhost permissions (plain may write topics) allow it.
        assert w.find_txn_coordinator(tid) == 0
        err, pid, epoch = w.init_producer_id(tid)
        assert err == 0
        assert w.add_partitions(tid, pid, epoch, {t: [0]}) == {(t, 0): 0}
        assert w.produce_txn(tid, pid, epoch, 0, t) == 0
        assert w.add_offsets(tid, pid, epoch, g) == 0
        assert w.txn_offset_commit(tid, pid, epoch, g, {t: [0]}) == {(t, 0): 0}
        # A DENY WRITE on the id for plain: every transactional request is refused with
        # 53, before anything else is looked at.
        create_ok(admin_c, [txn_acl(tid, perm=DENY)])
        eventually(lambda: w.end_txn(tid, pid, epoch, True), TXN_DENIED, "EndTxn")
        assert w.add_partitions(tid, pid, epoch, {t: [0], "no-such-topic": [0]}) == {
            (t, 0): TXN_DENIED, ("no-such-topic", 0): TXN_DENIED}
        assert w.add_offsets(tid, pid, epoch, g) == TXN_DENIED
        assert w.txn_offset_commit(tid, pid, epoch, g, {t: [0]}) == {(t, 0): TXN_DENIED}
        assert w.produce_txn(tid, pid, epoch, 1, t) == TXN_DENIED
        assert w.init_producer_id(tid)[0] == TXN_DENIED
        # The DENY leaves no ALLOW for DESCRIBE either: FindCoordinator refuses the id.
        assert w.find_txn_coordinator(tid) == TXN_DENIED
        # Another id without ACLs is untouched.
        assert w.find_txn_coordinator(tid + "x") == 0
        assert w.init_producer_id(tid + "x")[0] == 0
        # An ALLOW WRITE instead of the DENY: the open transaction can be committed.
        delete_ok(admin_c, [txn_acl(tid, perm=DENY)])
        create_ok(admin_c, [txn_acl(tid)])
        eventually(lambda: w.end_txn(tid, pid, epoch, True), 0, "EndTxn allowed")
    # The administrator commits through ACLs: super users are not subject to them.
    with wire(b, "admin") as w:
        create_ok(admin_c, [txn_acl(tid, perm=DENY, principal="User:*")])
        # (CONCURRENT_TRANSACTIONS, 51, until plain's commit markers are written.)
        eventually(lambda: w.init_producer_id(tid)[0], 0, "admin InitProducerId")


def test_group_and_topic_read_for_transactional_offsets(admin_and_plain):
    b = admin_and_plain
    admin_c = sasl(b, "admin")
    t, u = ksec.uniq("txr."), ksec.uniq("txr.")
    for name in (t, u):
        ksec.create_topic(admin_c, name)
    tid, g = ksec.uniq("tid."), ksec.uniq("g.")
    create_ok(admin_c, [txn_acl(tid)])
    with wire(b, "plain") as w:
        err, pid, epoch = w.init_producer_id(tid)
        assert err == 0
        # READ on the group denied: AddOffsetsToTxn and every partition of
        # TxnOffsetCommit get GROUP_AUTHORIZATION_FAILED.
        create_ok(admin_c, [acl(ResourceType.GROUP, g, "User:plain", AclOperation.READ, DENY)])
        eventually(lambda: w.add_offsets(tid, pid, epoch, g), GROUP_DENIED, "AddOffsets")
        assert w.txn_offset_commit(tid, pid, epoch, g, {t: [0], u: [0]}) == {
            (t, 0): GROUP_DENIED, (u, 0): GROUP_DENIED}
        delete_ok(admin_c, [acl(ResourceType.GROUP, g, "User:plain", AclOperation.READ, DENY)])
        eventually(lambda: w.add_offsets(tid, pid, epoch, g), 0, "AddOffsets allowed")
        # READ on topic t denied: its partition gets TOPIC_AUTHORIZATION_FAILED, u's
        # offset is taken (Kafka does not refuse the rest).
        create_ok(admin_c, [acl(ResourceType.TOPIC, t, "User:plain", AclOperation.READ, DENY)])
        eventually(lambda: w.txn_offset_commit(tid, pid, epoch, g, {t: [0], u: [0]}),
                   {(t, 0): TOPIC_DENIED, (u, 0): 0}, "TxnOffsetCommit")
        assert w.end_txn(tid, pid, epoch, True) == 0
    # The committed transaction applied u's offset only.
    a = ksec.admin(admin_c)
    deadline = time.monotonic() + 10
    while True:
        req = [ConsumerGroupTopicPartitions(g)]
        res = a.list_consumer_group_offsets(req, request_timeout=ksec.TIMEOUT)[g]
        offs = {(tp.topic, tp.partition): tp.offset
                for tp in res.result(ksec.TIMEOUT).topic_partitions if tp.offset >= 0}
        if offs or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert offs == {(u, 0): 1}, offs


def test_add_partitions_write_on_topic_and_id(admin_and_plain):
    """AddPartitionsToTxn: the id first (53 everywhere), then write per topic (29; the
    other partitions OPERATION_NOT_ATTEMPTED, 55)."""
    b = admin_and_plain
    admin_c = sasl(b, "admin")
    t, u = ksec.uniq("txw."), ksec.uniq("txw.")
    for name in (t, u):
        ksec.create_topic(admin_c, name)
    tid = ksec.uniq("tid.")
    with wire(b, "plain") as w:
        err, pid, epoch = w.init_producer_id(tid)
        assert err == 0
        create_ok(admin_c, [acl(ResourceType.TOPIC, t, "User:plain", AclOperation.WRITE, DENY)])
        eventually(lambda: w.add_partitions(tid, pid, epoch, {t: [0], u: [0]}),
                   {(t, 0): TOPIC_DENIED, (u, 0): 55}, "AddPartitions")
        assert w.add_partitions(tid, pid, epoch, {u: [0]}) == {(u, 0): 0}
        assert w.end_txn(tid, pid, epoch, False) == 0


def test_confluent_transactional_producer_is_refused_by_id_acls(admin_and_plain):
    b = admin_and_plain
    admin_c, plain_c = sasl(b, "admin"), sasl(b, "plain")
    t = ksec.uniq("txc.")
    ksec.create_topic(admin_c, t)
    # An ALLOW for another user covers the ids "team-a.*": plain may not use them.
    create_ok(admin_c, [txn_acl("team-a.", principal="User:other",
                                pattern=ResourcePatternType.PREFIXED)])
    p = txn_producer(plain_c, ksec.uniq("team-a."))
    with pytest.raises(KafkaException) as e:
        p.init_transactions(ksec.TIMEOUT)
    assert error_code(e.value).code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, e.value
    # Granted to plain by a prefixed ALLOW: the producer works.
    create_ok(admin_c, [txn_acl("team-a.", pattern=ResourcePatternType.PREFIXED)])
    tid = ksec.uniq("team-a.")
    p = txn_producer(plain_c, tid)
    p.init_transactions(ksec.TIMEOUT)
    p.begin_transaction()
    p.produce(t, b"committed")
    p.commit_transaction(ksec.TIMEOUT)
    # Revoked (a DENY on this id) in the middle of a transaction: its commit (EndTxn)
    # fails with 53, a fatal error for librdkafka.
    p.begin_transaction()
    p.produce(t, b"never")
    assert p.flush(ksec.TIMEOUT) == 0
    create_ok(admin_c, [txn_acl(tid, perm=DENY)])
    with pytest.raises(KafkaException) as e:
        p.commit_transaction(ksec.TIMEOUT)
    assert "TRANSACTIONAL_ID_AUTHORIZATION_FAILED" in str(e.value) or \
        error_code(e.value).code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, e.value
    # Another id of the prefix, revoked before its first AddPartitionsToTxn: the records
    # are not delivered and the error is the authorization failure.
    tid2 = ksec.uniq("team-a.")
    p2 = txn_producer(plain_c, tid2)
    p2.init_transactions(ksec.TIMEOUT)
    create_ok(admin_c, [txn_acl(tid2, perm=DENY)])
    p2.begin_transaction()
    errors = []
    p2.produce(t, b"refused", on_delivery=lambda err, _m: errors.append(err))
    with pytest.raises(KafkaException) as e:
        p2.commit_transaction(ksec.TIMEOUT)
    assert "TRANSACTIONAL_ID_AUTHORIZATION_FAILED" in str(e.value) or \
        error_code(e.value).code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, e.value
    p2.flush(5)
    assert errors and all(err is not None for err in errors), errors
    # A read_committed reader sees only the committed record.
    assert ksec.read_all(admin_c, t, 1) == [b"committed"]


def test_describe_and_list_transactions_need_describe_on_the_id(admin_and_plain):
    b = admin_and_plain
    admin_c, plain_c = sasl(b, "admin"), sasl(b, "plain")
    t = ksec.uniq("txd.")
    ksec.create_topic(admin_c, t)
    mine, theirs = ksec.uniq("mine."), ksec.uniq("theirs.")
    # Two open transactions (the administrator's producers, so no ACL is needed for them).
    producers = []
    for tid in (mine, theirs):
        p = txn_producer(admin_c, tid)
        p.init_transactions(ksec.TIMEOUT)
        p.begin_transaction()
        p.produce(t, b"open")
        assert p.flush(ksec.TIMEOUT) == 0
        producers.append(p)

    def kp(user):
        return KafkaAdminClient(bootstrap_servers=b.kafka_bootstrap,
                                security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                sasl_plain_username=user, sasl_plain_password=f"{user}-pw")

    def listed(a):
        return {x.transactional_id for ls in a.list_transactions().values() for x in ls}

    a, pa = kp("admin"), kp("plain")
    try:
        assert {mine, theirs} <= listed(a)
        # No ACL on the ids: describing and listing are for administrators.
        assert not ({mine, theirs} & listed(pa))
        with pytest.raises(kerrors.TransactionalIdAuthorizationFailedError):
            pa.describe_transactions([mine])
        # DESCRIBE on `mine` (WRITE would imply it): listed and described, `theirs` not.
        create_ok(admin_c, [txn_acl(mine, op=AclOperation.DESCRIBE)])
        deadline = time.monotonic() + 10
        while mine not in listed(pa) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listed(pa) & {mine, theirs} == {mine}
        d = pa.describe_transactions([mine])[mine]
        assert d.state.value == "Ongoing"
        assert {(tp.topic, tp.partition) for tp in d.topic_partitions} == {(t, 0)}
        with pytest.raises(kerrors.TransactionalIdAuthorizationFailedError):
            pa.describe_transactions([theirs])
    finally:
        a.close()
        pa.close()
        for p in producers:
            p.abort_transaction(ksec.TIMEOUT)
