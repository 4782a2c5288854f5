"""Consumer groups: members sharing a six-partition topic while members join and leave
(no record lost or processed twice across committed offsets), and committed offsets
surviving a broker restart. The cooperative-sticky variant of the churn test is in
test_groups_cooperative.py."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

import kafka_helpers as kh


class Member(threading.Thread):
    """One group member: polls, "processes" a record (records it), commits processed
    offsets synchronously every few records and, synchronously, for every partition
    it loses (on_revoke) — so no processed record can be read again by another member."""

    def __init__(self, name: str, bootstrap: str, group: str, topic: str,
                 processed: list, lock: threading.Lock, strategy: str):
        super().__init__(name=name, daemon=True)
        self.processed = processed
        self.lock = lock
        self.topic = topic
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None
        self.assignments: list[list[int]] = []
        self.pending: dict[int, int] = {}  # partition -> next offset, processed not committed
        self.done = 0  # records processed
        self.retried = 0  # poll-loop commits left for later (rebalance in progress)
        self.c = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 500,
            "partition.assignment.strategy": strategy,
            "client.id": name,
        })

    # A commit from the poll loop may meet a rebalance: Kafka answers REBALANCE_IN_PROGRESS
    # while the group waits for the leader's assignment, and ILLEGAL_GENERATION to a commit
    # stamped with the generation the member's own JoinGroup has just replaced (a
    # cooperative member keeps consuming and committing while it rejoins). Like Kafka's Java
    # client (RebalanceInProgressException, "retry after poll"), the member keeps those
    # offsets pending: its next commit, or the one in on_revoke if it loses the partition,
    # carries them. A commit from on_revoke or before close must succeed.
    RETRY_LATER = (KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION)

    def commit(self, partitions=None, must=True) -> None:
        offs = [TopicPartition(self.topic, p, o) for p, o in self.pending.items()
                if partitions is None or p in partitions]
        if offs:
            try:
                self.c.commit(offsets=offs, asynchronous=False)
            except KafkaException as e:
                if must or e.args[0].code() not in self.RETRY_LATER:
                    raise
                self.retried += 1
                return
            for tp in offs:
                self.pending.pop(tp.partition, None)

    def on_assign(self, consumer, parts):
        self.assignments.append(sorted(tp.partition for tp in parts))

    def on_revoke(self, consumer, parts):
        self.commit({tp.partition for tp in parts})

    def run(self):
        try:
            self.c.subscribe([self.topic], on_assign=self.on_assign, on_revoke=self.on_revoke)
            n = 0
            while not self.stop_flag.is_set():
                m = self.c.poll(0.1)
                if m is None:
                    continue
                if m.error():
                    raise KafkaException(m.error())
                with self.lock:
                    self.processed.append((self.name, m.partition(), m.offset(), m.value()))
                self.pending[m.partition()] = m.offset() + 1
                n += 1
                self.done = n
                if n % 20 == 0:
                    self.commit(must=False)
            self.commit(must=False)  # what stays pending is committed by on_revoke in close
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            try:
                self.c.close()  # revokes (committing) and leaves the group
            except Exception as e:  # noqa: BLE001
                self.error = self.error or e

    def leave(self, timeout: float = 30) -> None:
        self.stop_flag.set()
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} did not leave within {timeout}s"
        if self.error:
            raise AssertionError(f"{self.name} failed: {self.error!r}")


def churn(join, members, prod, count, n_total, prod_error, produced):
    def works(name):
        # A member has taken part once it processed a record: its join rebalanced the
        # group while records were still flowing.
        kh.wait_for(lambda: members[name].done > 0, 30, what=f"{name} to process records")

    join("m1")
    prod.start()
    works("m1")
    join("m2")
    works("m2")
    join("m3")
    works("m3")
    members["m1"].leave()
    at = count()
    kh.wait_for(lambda: count() >= at + 100, 30, what="progress after m1 left")
    join("m4")
    works("m4")
    members["m2"].leave()
    assert not prod_error, prod_error
    assert prod.is_alive(), "production ended before the churn did: slow the producer down"
    prod.join(60)
    assert not prod_error, prod_error
    assert produced and all(e is None for e in produced), [e for e in produced if e][:3]
    kh.wait_for(lambda: count() >= n_total, 60, what=f"all {n_total} records processed")
    for name in ("m3", "m4"):
        members[name].leave()


@pytest.mark.timeout(300)
def test_three_members_churn_no_loss_no_duplicates(bootstrap, topic, uniq):
    """Eager rebalancing (range assignor): members join and leave while records flow."""
    run_churn(bootstrap, topic, uniq, "range")


def run_churn(bootstrap, topic, uniq, strategy):
    t = topic(partitions=6)
    group = uniq("g")
    n_total = 6000
    values = kh.numbered(n_total, "churn")
    processed: list = []
    lock = threading.Lock()

    def count():
        with lock:
            return len(processed)

    produced: list = []
    prod_error: list = []

    def produce_paced():
        try:
            p = kh.producer(bootstrap, **{"linger.ms": 2})
            for i in range(0, n_total, 10):
                for v in values[i:i + 10]:
                    p.produce(t, value=v, on_delivery=lambda e, m: produced.append(e))
                p.poll(0)
                time.sleep(0.02)  # pacing (~400/s): records keep flowing while members churn
            assert p.flush(kh.CLIENT_TIMEOUT_S) == 0
        except BaseException as e:  # noqa: BLE001
            prod_error.append(e)

    members: dict[str, Member] = {}

    def join(name):
        m = Member(name, bootstrap, group, t, processed, lock, strategy)
        members[name] = m
        m.start()

    prod = threading.Thread(target=produce_paced, daemon=True)
    try:
        churn(join, members, prod, count, n_total, prod_error, produced)
    finally:
        for m in members.values():  # a failed run must not leave members polling
            m.stop_flag.set()
        for m in members.values():
            m.join(30)

    got = [v for (_, _, _, v) in processed]
    dups = len(got) - len(set(got))
    assert dups == 0, f"{dups} records processed twice"
    assert set(got) == set(values)
    # Each record was processed by whoever owned its partition at the time: at least
    # three different members took part.
    workers = {who for (who, _, _, _) in processed}
    assert len(workers) >= 3, (
        f"only {sorted(workers)} processed records; assignments seen: "
        f"{ {n: m.assignments for n, m in members.items()} }")
    # The group's committed offsets are the partitions' ends.
    marks = kh.watermarks(bootstrap, t)
    c = kh.consumer(bootstrap, group=group)
    try:
        committed = c.committed([TopicPartition(t, p) for p in range(6)], timeout=15)
    finally:
        c.close()
    assert {tp.partition: tp.offset for tp in committed} == {p: hi for p, (_, hi) in marks.items()}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "kill9"])
def test_commit_restart_resume(private_broker, uniq, crash):
    b = private_broker()
    t = uniq("t")
    kh.create_topic(b.kafka_bootstrap, t, 3)
    values = kh.numbered(600, "resume")
    kh.produce(b.kafka_bootstrap, t, values)
    group = uniq("g")

    def read(bootstrap, limit):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        got, nxt = [], {}
        try:
            c.subscribe([t])
            deadline = time.monotonic() + 30
            while len(got) < limit and time.monotonic() < deadline:
                m = c.poll(0.2)
                if m is None:
                    continue
                if m.error():
                    raise KafkaException(m.error())
                got.append(m.value())
                nxt[m.partition()] = m.offset() + 1
            if nxt:
                c.commit(offsets=[TopicPartition(t, p, o) for p, o in nxt.items()],
                         asynchronous=False)
        finally:
            c.close()
        return got

    first = read(b.kafka_bootstrap, 250)
    assert len(first) == 250
    b.kill9() if crash else b.stop()
    b.start()
    second = read(b.kafka_bootstrap, 350)
    assert len(second) == 350
    assert not set(first) & set(second), "records read again after resuming"
    assert set(first) | set(second) == set(values)

