"""Consume-transform-produce with confluent-kafka transactions (exactly once), shared by
test_transactions.py: imported for the in-process run, or run as a script
(`python txn_ctp.py BOOTSTRAP SRC DST GROUP TXN_ID TOTAL [PAUSE_S]`) so a test can
`kill -9` the producer in the middle of a transaction. Each transaction reads up to 25
records from SRC (read_committed, group GROUP), writes `T:<value>` to DST and commits the
consumer's positions with send_offsets_to_transaction; errors follow librdkafka's
classes: retriable → retry the commit, abortable → abort and rewind to the committed
offsets, fatal (fenced) → a new producer instance."""

from __future__ import annotations

import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

BATCH = 25


def _producer(bootstrap: str, txn_id: str) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                  "transaction.timeout.ms": 15000, "message.timeout.ms": 15000,
                  "linger.ms": 5, "reconnect.backoff.max.ms": 200})
    for _ in range(60):
        try:
            p.init_transactions(15)
            return p
        except KafkaException as e:
            if not e.args[0].retriable():
                raise
            time.sleep(0.2)
    raise RuntimeError("init_transactions kept failing")


def _committed_total(c: Consumer, src: str, parts: int) -> int:
    tps = c.committed([TopicPartition(src, p) for p in range(parts)], timeout=10)
    return sum(max(tp.offset, 0) for tp in tps)


def _rewind(c: Consumer) -> None:
    assignment = c.assignment()
    if not assignment:
        return
    for tp in c.committed(assignment, timeout=10):
        c.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))


def run(bootstrap: str, src: str, dst: str, group: str, txn_id: str, total: int,
        parts: int = 1, pause: float = 0.0, deadline_s: float = 120.0) -> int:
    """Runs until the group's committed offsets cover `total` input records. Returns the
    number of transactions committed."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed", "reconnect.backoff.max.ms": 200,
                  "session.timeout.ms": 10000})
    c.subscribe([src])
    p = _producer(bootstrap, txn_id)
    commits = 0
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            msgs = [m for m in c.consume(BATCH, 0.5) if m.error() is None]
            if not msgs:
                try:
                    if _committed_total(c, src, parts) >= total:
                        return commits
                except KafkaException:
                    pass
                continue
            try:
                p.begin_transaction()
                for m in msgs:
                    p.produce(dst, key=m.key(), value=b"T:" + m.value())
                if pause:
                    p.flush(10)
                    time.sleep(pause)  # a transaction open on the broker: kill -9 lands here
                p.send_offsets_to_transaction(c.position(c.assignment()),
                                              c.consumer_group_metadata(), 15)
                for attempt in range(40):
                    try:
                        p.commit_transaction(15)
                        break
                    except KafkaException as e:
                        if e.args[0].retriable() and attempt < 39:
                            time.sleep(0.25)
                            continue
                        raise
                commits += 1
            except KafkaException as e:
                err = e.args[0]
                if err.txn_requires_abort():
                    try:
                        p.abort_transaction(15)
                    except KafkaException:
                        p = _producer(bootstrap, txn_id)
                else:
                    # Fatal (fenced) or out of retries: a fresh producer aborts whatever
                    # the old one left open.
                    p = _producer(bootstrap, txn_id)
                _rewind(c)
        raise AssertionError(f"consume-transform-produce did not finish in {deadline_s}s")
    finally:
        c.close()


if __name__ == "__main__":
    a = sys.argv[1:]
    run(a[0], a[1], a[2], a[3], a[4], int(a[5]), pause=float(a[6]) if len(a) > 6 else 0.0)
