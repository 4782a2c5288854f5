"""Back-to-back short transactions (no offsets) across `kill -9` of the broker: the id's
next transaction begins while the previous one's markers are only appended, not yet
fsynced (docs/kafka-transactions.md), so a crash can land between a decision and its
markers being durable while the next transaction is already writing. Checked with
confluent-kafka: every transaction whose commit_transaction() returned is read exactly
once at read_committed, nothing of a transaction never committed is, no value twice,
and read_committed consumers reach the end of every partition (no transaction left
open holding the last stable offset back)."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaException, Producer

import kafka_helpers as kh
from test_transactions import read_all

PARTS = 3


def _producer(bootstrap: str, tid: str) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 1,
                  "message.timeout.ms": 15000, "transaction.timeout.ms": 20000})
    p.init_transactions(30)
    return p


@pytest.mark.timeout(240)
def test_back_to_back_transactions_across_broker_kill9(private_broker, uniq):
    b = private_broker()
    topic, tid = uniq("pipe"), uniq("pipe")
    kh.create_topic(b.kafka_bootstrap, topic, PARTS)
    committed: set[int] = set()   # commit_transaction() returned
    uncertain: set[int] = set()   # commit_transaction() raised: either outcome is allowed
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        n = 0
        p = None
        while not stop.is_set():
            try:
                if p is None:
                    p = _producer(b.kafka_bootstrap, tid)
                p.begin_transaction()
                for i in range(20):
                    p.produce(topic, f"{n}:{i}".encode(), partition=i % PARTS)
                try:
                    p.commit_transaction(30)
                    committed.add(n)
                except KafkaException:
                    uncertain.add(n)
                    raise
            except KafkaException:
                # The broker went away: a new instance fences and aborts what is open.
                p = None
                time.sleep(0.2)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return
            n += 1

    th = threading.Thread(target=run, daemon=True)
    th.start()
    for _ in range(3):
        kh.wait_for(lambda: len(committed) > 30, 60, what="transactions to commit")
        before = len(committed)
        b.kill9()
        b.start(same_port=True)
        kh.wait_for(lambda: len(committed) > before + 10, 90,
                    what="transactions to commit after the restart")
    stop.set()
    th.join(60)
    assert not errors, errors
    print(f"committed {len(committed)} uncertain {sorted(uncertain)}")
    values = read_all(b.kafka_bootstrap, topic, "read_committed", parts=PARTS, timeout=60)
    assert len(values) == len(set(values)), "a value read twice"
    seen: dict[int, int] = {}
    for v in values:
        n = int(v.split(b":")[0])
        seen[n] = seen.get(n, 0) + 1
    for n in committed:
        assert seen.get(n) == 20, f"committed transaction {n}: {seen.get(n)} of 20 records"
    for n, count in seen.items():
        assert n in committed or n in uncertain, f"transaction {n} never committed is visible"
        assert count == 20, f"transaction {n} partly visible ({count} of 20)"
