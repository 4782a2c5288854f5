"""KIP-848 consumer groups (`group.protocol=consumer`) with confluent-kafka/librdkafka:
ConsumerGroupHeartbeat with server-side assignment, members joining and leaving while
records flow (no record lost or processed twice), commits with member epochs, static
membership, the session timeout of a killed member, the uniform and range assignors,
ConsumerGroupDescribe/ListGroups, and the rule that a classic member cannot join a
consumer group.

Moved out of pending/ on 2026-12-07 after three fixes: the AdminClient behind describe()
and ListGroups is kept alive until its future completes (a temporary one was destroyed at
once and `.result()` waited forever); the broker no longer fences a static member's
heartbeat that leaves the instance id out (librdkafka sends it in full requests only); and
the churn test's producer runs long enough for KIP-848's heartbeat-paced reconciliation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupType,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

import kafka_helpers as kh


def kip848(bootstrap: str, group: str, **conf) -> Consumer:
    base = {"bootstrap.servers": bootstrap, "group.id": group,
            "group.protocol": "consumer",
            "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    base.update(conf)
    return Consumer(base)


class Member(threading.Thread):
    """A KIP-848 member: records what it processes, commits every 20 records and, for
    every partition it loses, in on_revoke (so nobody reads a processed record again)."""

    def __init__(self, name, bootstrap, group, topic, processed, lock, **conf):
        super().__init__(name=name, daemon=True)
        self.processed, self.lock, self.topic = processed, lock, topic
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None
        self.pending: dict[int, int] = {}
        self.owned: set[int] = set()
        self.done = 0
        self.c = kip848(bootstrap, group, **{"client.id": name, **conf})

    def commit(self, partitions=None):
        offs = [TopicPartition(self.topic, p, o) for p, o in self.pending.items()
                if partitions is None or p in partitions]
        if offs:
            self.c.commit(offsets=offs, asynchronous=False)
            for tp in offs:
                self.pending.pop(tp.partition, None)

    def on_assign(self, consumer, parts):
        self.owned |= {tp.partition for tp in parts}

    def on_revoke(self, consumer, parts):
        gone = {tp.partition for tp in parts}
        self.commit(gone)
        self.owned -= gone

    def run(self):
        try:
            self.c.subscribe([self.topic], on_assign=self.on_assign, on_revoke=self.on_revoke)
            while not self.stop_flag.is_set():
                m = self.c.poll(0.1)
                if m is None:
                    continue
                if m.error():
                    raise KafkaException(m.error())
                with self.lock:
                    self.processed.append((self.name, m.partition(), m.offset(), m.value()))
                self.pending[m.partition()] = m.offset() + 1
                self.done += 1
                if self.done % 20 == 0:
                    self.commit()
            self.commit()
        except BaseException as e:  # noqa: BLE001 - reported by leave()
            self.error = e
        finally:
            try:
                self.c.close()
            except Exception as e:  # noqa: BLE001
                self.error = self.error or e

    def leave(self, timeout=30):
        self.stop_flag.set()
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} did not leave within {timeout}s"
        if self.error:
            raise AssertionError(f"{self.name} failed: {self.error!r}")


def describe(bootstrap, group):
    # The AdminClient must outlive its futures: a temporary one is destroyed as soon as
    # the call returns, and its futures then never complete (the old `.result()` hang).
    a = kh.admin(bootstrap)
    fut = a.describe_consumer_groups([group], request_timeout=15)
    return fut[group].result(timeout=30)


def list_groups(bootstrap):
    a = kh.admin(bootstrap)
    return a.list_consumer_groups(request_timeout=15).result(timeout=30)


@pytest.mark.timeout(240)
def test_members_join_and_leave_no_loss_no_duplicates(bootstrap, topic, uniq):
    t = topic(partitions=6)
    group = uniq("g")
    n_total = 4000
    values = kh.numbered(n_total, "kip848")
    processed: list = []
    lock = threading.Lock()
    count = lambda: len(processed)  # noqa: E731
    errors: list = []

    def produce_paced():
        try:
            p = kh.producer(bootstrap, **{"linger.ms": 2})
            for i in range(0, n_total, 10):
                for v in values[i:i + 10]:
                    p.produce(t, value=v)
                p.poll(0)
                # ~100 records/s, ~40 s in all: a KIP-848 member learns of a new target
                # assignment at its next heartbeat (5 s apart by default, as in Kafka), so
                # each join or leave takes a few seconds to settle and records must still
                # flow when the last member joins (the first run used 0.02 s: production
                # ended before m3 got partitions, and m3 never had a record to process).
                time.sleep(0.1)
            assert p.flush(kh.CLIENT_TIMEOUT_S) == 0
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    members: dict[str, Member] = {}

    def join(name):
        members[name] = Member(name, bootstrap, group, t, processed, lock)
        members[name].start()
        kh.wait_for(lambda: members[name].done > 0, 30, what=f"{name} to process records")

    prod = threading.Thread(target=produce_paced, daemon=True)
    try:
        prod.start()
        join("m1")
        join("m2")
        join("m3")
        d = describe(bootstrap, group)
        assert d.type == ConsumerGroupType.CONSUMER
        assert len(d.members) == 3
        assert prod.is_alive(), "production ended before the churn did: slow the producer down"
        members["m1"].leave()
        at = count()
        kh.wait_for(lambda: count() >= at + 100, 30, what="progress after m1 left")
        members["m2"].leave()
        prod.join(120)
        assert not errors, errors
        kh.wait_for(lambda: count() >= n_total, 60, what=f"all {n_total} records processed")
        kh.wait_for(lambda: members["m3"].owned == set(range(6)), 30,
                    what="m3 to own every partition")
        members["m3"].leave()
    finally:
        for m in members.values():
            m.stop_flag.set()
        for m in members.values():
            m.join(30)
    got = [v for (_, _, _, v) in processed]
    assert len(got) - len(set(got)) == 0, "records processed twice"
    assert set(got) == set(values)
    assert {w for (w, _, _, _) in processed} == {"m1", "m2", "m3"}
    marks = kh.watermarks(bootstrap, t)
    c = kh.consumer(bootstrap, group=group)
    try:
        committed = c.committed([TopicPartition(t, p) for p in range(6)], timeout=15)
    finally:
        c.close()
    assert {tp.partition: tp.offset for tp in committed} == {p: hi for p, (_, hi) in marks.items()}
    # Every member left: the group is empty, listed as a consumer group.
    groups = list_groups(bootstrap)
    listed = {g.group_id: g for g in groups.valid}
    assert listed[group].type == ConsumerGroupType.CONSUMER
    assert listed[group].state == ConsumerGroupState.EMPTY


def assigned_after(consumers, want_total, timeout=30):
    """Polls every consumer until their assignments cover `want_total` partitions."""
    def covered():
        for c in consumers:
            c.poll(0.05)
        return sum(len(c.assignment()) for c in consumers) == want_total and all(
            c.assignment() for c in consumers)
    kh.wait_for(covered, timeout, interval=0.01, what="the assignment to settle")
    return [sorted((tp.topic, tp.partition) for tp in c.assignment()) for c in consumers]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("assignor", ["uniform", "range"])
def test_server_assignors(bootstrap, topic, uniq, assignor):
    t1, t2 = sorted([topic(partitions=3), topic(partitions=3)])
    group = uniq("g")
    a = kip848(bootstrap, group, **{"group.remote.assignor": assignor, "client.id": "a"})
    a.subscribe([t1, t2])
    assigned_after([a], 6)
    b = kip848(bootstrap, group, **{"group.remote.assignor": assignor, "client.id": "b"})
    b.subscribe([t1, t2])
    try:
        def settled():
            for c in (a, b):
                c.poll(0.05)
            return len(a.assignment()) + len(b.assignment()) == 6 and len(b.assignment()) > 0
        kh.wait_for(settled, 30, interval=0.01, what="two members to share the topics")
        got = sorted([sorted((tp.topic, tp.partition) for tp in c.assignment()) for c in (a, b)],
                     key=len)
        d = describe(bootstrap, group)
        member_ids = sorted(m.member_id for m in d.members)
        if assignor == "range":
            # Per topic: the first member (by id) gets partitions 0-1, the second gets 2.
            assert [len(x) for x in got] == [2, 4]
            first = next(m for m in d.members if m.member_id == member_ids[0])
            parts = sorted((tp.topic, tp.partition) for tp in first.assignment.topic_partitions)
            assert parts == [(t1, 0), (t1, 1), (t2, 0), (t2, 1)]
        else:
            assert [len(x) for x in got] == [3, 3]
        assert not set(got[0]) & set(got[1])
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(120)
def test_static_member_comes_back_to_its_partitions(bootstrap, topic, uniq):
    t = topic(partitions=4)
    group = uniq("g")
    a = kip848(bootstrap, group, **{"group.instance.id": "inst-a"})
    b = kip848(bootstrap, group, **{"group.instance.id": "inst-b"})
    for c in (a, b):
        c.subscribe([t])
    try:
        first = assigned_after([a, b], 4)
        d = describe(bootstrap, group)
        assert sorted(m.group_instance_id for m in d.members) == ["inst-a", "inst-b"]
        a.close()  # a static member's close is a temporary leave (epoch -2)
        # b keeps its two partitions; a's stay reserved for its instance id.
        for _ in range(20):
            b.poll(0.05)
        assert sorted((tp.topic, tp.partition) for tp in b.assignment()) == first[1]
        a = kip848(bootstrap, group, **{"group.instance.id": "inst-a"})
        a.subscribe([t])
        again = assigned_after([a, b], 4)
        assert again == first
        # Another process with the same instance id while a is there is refused.
        dup = kip848(bootstrap, group, **{"group.instance.id": "inst-a"})
        dup.subscribe([t])
        try:
            def refused():
                m = dup.poll(0.2)
                return m is not None and m.error() is not None and m.error().code() in (
                    KafkaError.UNRELEASED_INSTANCE_ID, KafkaError._FATAL)
            kh.wait_for(refused, 20, interval=0, what="UNRELEASED_INSTANCE_ID")
        finally:
            dup.close()
    finally:
        a.close()
        b.close()


KILLED_MEMBER = textwrap.dedent("""
    import sys, time
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                  "group.protocol": "consumer", "auto.offset.reset": "earliest"})
    c.subscribe([sys.argv[3]])
    while True:
        c.poll(0.1)
        if c.assignment():
            print("assigned", flush=True)
""")


@pytest.mark.timeout(120)
def test_session_timeout_of_a_killed_member(private_broker, uniq):
    b = private_broker(env={"FERRYMQ_KAFKA_CONSUMER_SESSION_TIMEOUT_MS": "3000",
                            "FERRYMQ_KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS": "500"})
    bs = b.kafka_bootstrap
    t, group = uniq("t"), uniq("g")
    kh.create_topic(bs, t, 4)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MEMBER, bs, group, t],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "assigned"
        c = kip848(bs, group)
        c.subscribe([t])
        kh.wait_for(lambda: (c.poll(0.05), len(c.assignment()) == 2)[1], 30, interval=0,
                    what="the second member to get half")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        t0 = time.monotonic()
        kh.wait_for(lambda: (c.poll(0.05), len(c.assignment()) == 4)[1], 30, interval=0,
                    what="the survivor to get every partition")
        assert time.monotonic() - t0 >= 1.0, "taken over before the session could expire"
        d = describe(bs, group)
        assert len(d.members) == 1 and d.state == ConsumerGroupState.STABLE
        c.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(60)
def test_classic_member_cannot_join_a_consumer_group(bootstrap, topic, uniq):
    t = topic(partitions=1)
    group = uniq("g")
    a = kip848(bootstrap, group)
    a.subscribe([t])
    classic = kh.consumer(bootstrap, group=group, **{"group.protocol": "classic"})
    try:
        assigned_after([a], 1)
        classic.subscribe([t])

        def refused():
            m = classic.poll(0.2)
            return m is not None and m.error() is not None and \
                m.error().code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL
        kh.wait_for(refused, 20, interval=0, what="INCONSISTENT_GROUP_PROTOCOL")
    finally:
        classic.close()
        a.close()


@pytest.mark.timeout(120)
def test_regex_resolved_asynchronously_and_new_topics_matched(private_broker, uniq):
    """Kafka's asynchronous regex resolution: the heartbeat that subscribes to a literal
    topic and a regex is assigned the literal topic; the coordinator resolves the regex
    after answering it and the matched topics come with a later heartbeat. A topic created
    later that matches joins the assignment once the group refreshes its regexes (not
    within the refresh interval of the last resolution: 2 s here, Kafka's 10 s default)."""
    import re

    b = private_broker(env={"FERRYMQ_KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS": "500",
                            "FERRYMQ_KAFKA_CONSUMER_REGEX_REFRESH_MIN_INTERVAL_MS": "2000"})
    bs = b.kafka_bootstrap
    p = uniq("rx")
    lit, m1, m2 = f"{p}.lit", f"{p}.m1", f"{p}.m2"
    kh.create_topic(bs, lit, 2)
    kh.create_topic(bs, m1, 2)
    events: list[set] = []

    def on_assign(consumer, parts):
        if parts:
            events.append({(tp.topic, tp.partition) for tp in parts})

    c = kip848(bs, uniq("g"))
    try:
        c.subscribe([lit, "^" + re.escape(p) + r"\.m.*"], on_assign=on_assign)
        want = {(lit, 0), (lit, 1), (m1, 0), (m1, 1)}
        kh.wait_for(lambda: (c.poll(0.05), {(tp.topic, tp.partition) for tp in c.assignment()}
                             == want)[1], 30, interval=0, what="literal and regex topics")
        assert events[0] == {(lit, 0), (lit, 1)}, events
        assert events[1] == {(m1, 0), (m1, 1)}, events
        t0 = time.monotonic()
        kh.create_topic(bs, m2, 1)
        kh.wait_for(lambda: (c.poll(0.05), (m2, 0) in {(tp.topic, tp.partition)
                                                        for tp in c.assignment()})[1],
                    30, interval=0, what="the new matching topic")
        assert events[-1] == {(m2, 0)}, events
        assert len(c.assignment()) == 5
        print(f"new topic assigned after {time.monotonic() - t0:.1f}s")
    finally:
        c.close()
