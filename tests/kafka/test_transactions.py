"""Kafka transactions with real clients (confluent-kafka / librdkafka and kafka-python):
commit and abort as read_committed and read_uncommitted consumers see them, the last
stable offset holding read_committed consumers back while a transaction is open,
zombie fencing, timeout abort, and consume-transform-produce exactly once across a
`kill -9` of the broker and of the producer in the middle of a transaction."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kafka.record.default_records import DefaultRecordBatchBuilder

import kafka_helpers as kh
import txn_ctp

HERE = Path(__file__).resolve().parent


def txn_producer(bootstrap: str, txn_id: str, **conf) -> Producer:
    base = {"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 5,
            "message.timeout.ms": 20000}
    base.update(conf)
    p = Producer(base)
    p.init_transactions(20)
    return p


def read_all(bootstrap: str, topic: str, isolation: str, parts: int = 1,
             timeout: float = 20.0) -> list[bytes]:
    """Values of `topic` from the beginning to each partition's end as this isolation
    level sees it (EOF: the last stable offset for read_committed)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"kt.r.{time.monotonic_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "enable.partition.eof": True, "isolation.level": isolation})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(parts)])
        out: list[bytes] = []
        eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(eof) < parts:
            assert time.monotonic() < deadline, f"no EOF on {topic} ({isolation}) after {timeout}s"
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise KafkaException(m.error())
            eof.discard(m.partition())
            out.append(m.value())
        return out
    finally:
        c.close()


def kp_read_all(bootstrap: str, topic: str, isolation: str) -> list[bytes]:
    return [r.value for r in kh.kp_consume_to_end(bootstrap, topic, isolation_level=isolation)]


def test_commit_and_abort_seen_by_both_isolation_levels(bootstrap, topic, uniq):
    t = topic(2)
    p = txn_producer(bootstrap, uniq("txn"))
    for name, commit in [("a", True), ("b", False), ("c", True)]:
        p.begin_transaction()
        for i in range(20):
            p.produce(t, value=f"{name}{i}".encode(), partition=i % 2)
        if commit:
            p.commit_transaction(20)
        else:
            p.flush(20)
            p.abort_transaction(20)
    committed = sorted(f"{n}{i}".encode() for n in "ac" for i in range(20))
    everything = sorted(f"{n}{i}".encode() for n in "abc" for i in range(20))
    assert sorted(read_all(bootstrap, t, "read_committed", 2)) == committed
    assert sorted(read_all(bootstrap, t, "read_uncommitted", 2)) == everything
    # kafka-python filters the same way from the same aborted-transaction lists.
    assert sorted(kp_read_all(bootstrap, t, "read_committed")) == committed
    assert sorted(kp_read_all(bootstrap, t, "read_uncommitted")) == everything


def test_kafka_python_transactional_producer(bootstrap, topic, uniq):
    from kafka import KafkaProducer

    t = topic(1)
    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=uniq("kptxn"))
    try:
        p.init_transactions()
        p.begin_transaction()
        for i in range(10):
            p.send(t, value=f"keep{i}".encode())
        p.commit_transaction()
        p.begin_transaction()
        for i in range(10):
            p.send(t, value=f"drop{i}".encode())
        p.flush()
        p.abort_transaction()
        p.begin_transaction()
        p.send(t, value=b"last")
        p.commit_transaction()
    finally:
        p.close(10)
    want = [f"keep{i}".encode() for i in range(10)] + [b"last"]
    assert read_all(bootstrap, t, "read_committed") == want
    assert kp_read_all(bootstrap, t, "read_committed") == want
    assert len(read_all(bootstrap, t, "read_uncommitted")) == 21


def test_lso_holds_read_committed_back_while_a_transaction_is_open(bootstrap, topic, uniq):
    t = topic(1)
    kh.produce(bootstrap, t, [b"before"])
    p = txn_producer(bootstrap, uniq("lso"))
    p.begin_transaction()
    p.produce(t, value=b"in-txn")
    p.flush(20)
    # Records after the open transaction's first offset wait too, even non-transactional ones.
    kh.produce(bootstrap, t, [b"after"])
    assert read_all(bootstrap, t, "read_committed") == [b"before"]
    assert read_all(bootstrap, t, "read_uncommitted") == [b"before", b"in-txn", b"after"]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uniq("g"),
                  "isolation.level": "read_committed"})
    try:
        # ListOffsets at read_committed answers the LSO (offset of "in-txn").
        lo, hi = c.get_watermark_offsets(TopicPartition(t, 0), timeout=10, cached=False)
        assert (lo, hi) == (0, 1)
    finally:
        c.close()
    p.commit_transaction(20)
    assert read_all(bootstrap, t, "read_committed") == [b"before", b"in-txn", b"after"]


def test_zombie_is_fenced_and_its_transaction_aborted(bootstrap, topic, uniq):
    t = topic(1)
    tid = uniq("zombie")
    old = txn_producer(bootstrap, tid)
    old.begin_transaction()
    old.produce(t, value=b"zombie")
    old.flush(20)
    new = txn_producer(bootstrap, tid)  # fences `old`, aborts its open transaction
    with pytest.raises(KafkaException) as e:
        old.commit_transaction(20)
    err = e.value.args[0]
    assert err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                         KafkaError.INVALID_PRODUCER_EPOCH), err
    new.begin_transaction()
    new.produce(t, value=b"new")
    new.commit_transaction(20)
    assert read_all(bootstrap, t, "read_committed") == [b"new"]
    assert read_all(bootstrap, t, "read_uncommitted") == [b"zombie", b"new"]


def test_abandoned_transaction_times_out_and_is_aborted(bootstrap, topic, uniq):
    t = topic(1)
    p = txn_producer(bootstrap, uniq("timeout"), **{"transaction.timeout.ms": 1500,
                                                      "message.timeout.ms": 1500})
    p.begin_transaction()
    p.produce(t, value=b"abandoned")
    p.flush(20)
    kh.produce(bootstrap, t, [b"later"])
    # The coordinator aborts it after 1.5 s: the LSO moves past it, "later" shows.
    got = kh.wait_for(lambda: read_all(bootstrap, t, "read_committed", timeout=5) or None,
                      timeout=20, interval=0.3, what="the timed-out transaction to abort")
    assert got == [b"later"]
    with pytest.raises(KafkaException):
        p.commit_transaction(10)


def test_offsets_committed_only_with_the_transaction(bootstrap, topic, uniq):
    src, dst, group = topic(1), topic(1), uniq("g")
    kh.produce(bootstrap, src, [f"v{i}".encode() for i in range(10)])
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.subscribe([src])
    msgs = kh.wait_for(lambda: c.consume(10, 0.5), what="input")
    p = txn_producer(bootstrap, uniq("offs"))
    p.begin_transaction()
    p.produce(dst, value=b"x")
    p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 20)
    p.abort_transaction(20)
    assert c.committed([TopicPartition(src, 0)], timeout=10)[0].offset < 0, "aborted offsets applied"
    p.begin_transaction()
    p.produce(dst, value=b"y")
    p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 20)
    p.commit_transaction(20)
    assert c.committed([TopicPartition(src, 0)], timeout=10)[0].offset == len(msgs)
    c.close()
    assert read_all(bootstrap, dst, "read_committed") == [b"y"]


def check_exactly_once(bootstrap: str, dst: str, values: list[bytes]) -> None:
    out = read_all(bootstrap, dst, "read_committed", timeout=30)
    dup = len(out) - len(set(out))
    assert dup == 0, f"{dup} duplicates in the output"
    assert sorted(out) == sorted(b"T:" + v for v in values)


def run_ctp_to_completion(bootstrap, src, dst, group, tid, total, pause, stall_s=25.0,
                          attempts=4):
    """Runs txn_ctp.py as a process until it finishes. librdkafka 2.16's
    send_offsets_to_transaction can stall for good after the coordinator restarts (no
    TxnOffsetCommit is ever sent); like an application watchdog, a run that stalls is
    killed and started again, which is one more producer crash to survive."""
    args = [sys.executable, str(HERE / "txn_ctp.py"), bootstrap, src, dst, group, tid,
            str(total), str(pause)]
    for _ in range(attempts):
        proc = subprocess.Popen(args, cwd=HERE)
        try:
            proc.wait(stall_s)
            if proc.returncode == 0:
                return
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    raise AssertionError("consume-transform-produce did not finish")


@pytest.mark.timeout(240)
def test_consume_transform_produce_exactly_once_across_broker_kill9(private_broker, uniq):
    b = private_broker()
    src, dst, group, tid = uniq("src"), uniq("dst"), uniq("g"), uniq("ctp")
    kh.create_topic(b.kafka_bootstrap, src, 1)
    kh.create_topic(b.kafka_bootstrap, dst, 1)
    values = kh.numbered(600, "in")
    kh.produce(b.kafka_bootstrap, src, values)
    killed = threading.Event()

    def killer():
        # Wait for some output (a transaction in flight or done), then crash the broker.
        kh.wait_for(lambda: kh.watermarks(b.kafka_bootstrap, dst)[0][1] > 100, 60,
                    what="output to start")
        b.kill9()
        b.start(same_port=True)
        killed.set()

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    run_ctp_to_completion(b.kafka_bootstrap, src, dst, group, tid, len(values), 0.05)
    th.join(60)
    assert killed.is_set()
    check_exactly_once(b.kafka_bootstrap, dst, values)


@pytest.mark.timeout(240)
def test_consume_transform_produce_exactly_once_across_producer_kill9(bootstrap, topic, uniq):
    src, dst, group, tid = topic(1), topic(1), uniq("g"), uniq("ctp")
    values = kh.numbered(400, "in")
    kh.produce(bootstrap, src, values)
    args = [sys.executable, str(HERE / "txn_ctp.py"), bootstrap, src, dst, group, tid,
            str(len(values))]
    # First run: slow transactions (each stays open 0.5 s); killed with one open.
    proc = subprocess.Popen(args + ["0.5"], cwd=HERE)
    try:
        kh.wait_for(lambda: read_all(bootstrap, dst, "read_uncommitted", timeout=10) and
                    len(read_all(bootstrap, dst, "read_uncommitted", timeout=10)) > 60,
                    60, interval=0.2, what="the first transactions")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    # Uncommitted output of the killed instance is there, read_committed must not see it.
    # The restarted instance (same transactional.id) fences it and finishes the work.
    subprocess.run(args, cwd=HERE, check=True, timeout=150)
    check_exactly_once(bootstrap, dst, values)


# ---- KIP-447: TxnOffsetCommit checks the consumer's group generation and member ----

def test_txn_offset_commit_from_a_departed_member_is_fenced(bootstrap, topic, uniq):
    """confluent-kafka sends TxnOffsetCommit v3 with the consumer's group metadata. A
    consumer that has left the group (a zombie) cannot commit offsets through a
    transaction: UNKNOWN_MEMBER_ID, abortable; the live member's metadata works."""
    topic = topic(1)
    group = uniq("g447")
    kh.produce(bootstrap, topic, [b"a", b"b"], partition=0)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    kh.wait_for(lambda: c.poll(0.2) is not None or bool(c.assignment()), timeout=30,
                what="assignment")
    stale = c.consumer_group_metadata()
    c.close()  # leaves the group: its member id is gone
    p = txn_producer(bootstrap, uniq("t447"))
    p.begin_transaction()
    p.produce(topic, b"out", partition=0)
    with pytest.raises(KafkaException) as e:
        p.send_offsets_to_transaction([TopicPartition(topic, 0, 2)], stale, 20)
    err = e.value.args[0]
    assert err.code() == KafkaError.UNKNOWN_MEMBER_ID, err
    assert err.txn_requires_abort(), err
    p.abort_transaction(20)
    # A live member of the current generation commits through the transaction.
    c2 = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                   "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        c2.subscribe([topic])
        kh.wait_for(lambda: c2.poll(0.2) is not None or bool(c2.assignment()), timeout=30,
                    what="assignment")
        p.begin_transaction()
        p.produce(topic, b"out2", partition=0)
        p.send_offsets_to_transaction([TopicPartition(topic, 0, 2)],
                                      c2.consumer_group_metadata(), 20)
        p.commit_transaction(20)
        got = c2.committed([TopicPartition(topic, 0)], timeout=10)
        assert got[0].offset == 2
    finally:
        c2.close()


def test_txn_offset_commit_with_a_generation_for_an_unknown_group(bootstrap, topic, uniq):
    """kafka-python's transactional producer sends the consumer's generation too; a
    generation for a group the coordinator does not know is ILLEGAL_GENERATION."""
    topic = topic(1)
    from kafka import KafkaProducer
    from kafka import TopicPartition as KTP
    from kafka.errors import CommitFailedError
    from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata

    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=uniq("t447kp"))
    try:
        p.init_transactions()
        p.begin_transaction()
        p.send(topic, b"x", partition=0).get(20)
        meta = ConsumerGroupMetadata(uniq("ghost"), 5, "ghost-member", None)
        with pytest.raises(CommitFailedError, match="IllegalGenerationError"):
            p.send_offsets_to_transaction({KTP(topic, 0): OffsetAndMetadata(1, "", -1)}, meta)
    finally:
        p.close(timeout=5)


# ---- KIP-890 part 1: a transactional write must go to a partition added to the txn ----

def _kstr(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _call(sock, api_key: int, version: int, body: bytes) -> bytes:
    msg = struct.pack(">hhi", api_key, version, 7) + _kstr("kip890") + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)

    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            assert chunk, "connection closed"
            buf += chunk
        return buf

    (n,) = struct.unpack(">i", exact(4))
    return exact(n)[4:]  # minus the correlation id


def _txn_batch(pid: int, epoch: int, seq: int) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=True,
                                  producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                                  batch_size=1 << 20)
    b.append(0, timestamp=1_700_000_000_000, key=None, value=b"kip890", headers=[])
    return bytes(b.build())


def _produce_error(sock, txn_id: str | None, topic: str, partition: int, records: bytes) -> int:
    body = (_kstr(txn_id) + struct.pack(">hi", -1, 10000) + struct.pack(">i", 1) + _kstr(topic)
            + struct.pack(">i", 1) + struct.pack(">i", partition)
            + struct.pack(">i", len(records)) + records)
    r = _call(sock, 0, 3, body)
    # [topic: string, [partition i32, error i16, base_offset i64, append_time i64]], throttle
    (tlen,) = struct.unpack(">h", r[4:6])
    at = 6 + tlen + 4
    _, err = struct.unpack(">ih", r[at:at + 6])
    return err


def test_transactional_produce_to_a_partition_not_in_the_transaction_is_refused(bootstrap, uniq):
    """Raw requests (a well-behaved client always adds partitions first): a transactional
    batch to a partition that is not in the producer's ongoing transaction gets
    INVALID_TXN_STATE (48), as Kafka 3.6+ answers; without a transactional id it gets
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53); after AddPartitionsToTxn it is appended."""
    topic = uniq("kip890")
    kh.create_topic(bootstrap, topic, partitions=2)
    tid = uniq("t890")
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        # InitProducerId v1: transactional_id, timeout -> throttle, error, pid, epoch.
        r = _call(s, 22, 1, _kstr(tid) + struct.pack(">i", 60000))
        _, err, pid, epoch = struct.unpack(">ihqh", r[:16])
        assert err == 0
        # No transaction open at all.
        assert _produce_error(s, tid, topic, 0, _txn_batch(pid, epoch, 0)) == 48
        # AddPartitionsToTxn v0 with partition 0 only.
        body = (_kstr(tid) + struct.pack(">qh", pid, epoch) + struct.pack(">i", 1) + _kstr(topic)
                + struct.pack(">ii", 1, 0))
        r = _call(s, 24, 0, body)
        assert r[-2:] == b"\x00\x00", r  # the one partition's error code
        assert _produce_error(s, tid, topic, 1, _txn_batch(pid, epoch, 0)) == 48
        assert _produce_error(s, None, topic, 0, _txn_batch(pid, epoch, 0)) == 53
        assert _produce_error(s, tid, topic, 0, _txn_batch(pid, epoch, 0)) == 0
        # EndTxn v0 (abort): the partition is no longer in a transaction afterwards.
        r = _call(s, 26, 0, _kstr(tid) + struct.pack(">qhb", pid, epoch, 0))
        assert struct.unpack(">ih", r[:6])[1] == 0
        kh.wait_for(lambda: _produce_error(s, tid, topic, 0, _txn_batch(pid, epoch, 1)) == 48,
                    timeout=10, what="late write after the abort refused")
