"""Transactional vs idempotent produce with confluent-kafka, same broker, same run.

    python bench/kafka_txn_bench.py BOOTSTRAP [RECORDS] [ROUNDS]

Each round runs, on fresh one-partition topics, 100-byte records:
  idempotent     enable.idempotence, acks=all, produce RECORDS then flush
  transactional  transactional.id, 100 records per transaction (begin, produce 100,
                 commit), RECORDS in all
and times EndTxn alone: for a sample of transactions the records are flushed first, so
commit_transaction() is only the EndTxn round trip (the coordinator logs PrepareCommit,
fsyncs, answers; markers follow). Prints records/s per mode per round, their ratio, and
EndTxn p50/p99/max over all samples."""

import statistics
import sys
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

BOOT = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
PER_TXN = 100
# linger.ms of the transactional producer (env TXN_LINGER_MS; the idempotent one uses 5):
# a transaction's 100 records are one batch, and librdkafka lingers before sending it.
TXN_LINGER = int(__import__("os").environ.get("TXN_LINGER_MS", "5"))
VALUE = b"x" * 100


def topic() -> str:
    name = f"bench.txn.{uuid.uuid4().hex[:10]}"
    a = AdminClient({"bootstrap.servers": BOOT})
    a.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    time.sleep(0.3)
    return name


def produce_all(p: Producer, t: str, n: int) -> None:
    for _ in range(n):
        while True:
            try:
                p.produce(t, VALUE)
                break
            except BufferError:
                p.poll(0.001)
    p.poll(0)


def idempotent(n: int) -> float:
    t = topic()
    p = Producer({"bootstrap.servers": BOOT, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5, "batch.num.messages": 10000})
    start = time.perf_counter()
    produce_all(p, t, n)
    assert p.flush(120) == 0
    return n / (time.perf_counter() - start)


def transactional(n: int, endtxn: list) -> float:
    t = topic()
    p = Producer({"bootstrap.servers": BOOT, "transactional.id": f"bench-{uuid.uuid4().hex}",
                  "linger.ms": TXN_LINGER, "batch.num.messages": 10000})
    p.init_transactions(30)
    start = time.perf_counter()
    for i in range(n // PER_TXN):
        p.begin_transaction()
        produce_all(p, t, PER_TXN)
        if i % 20 == 0:
            # A sample: records flushed first, so the commit is EndTxn alone.
            p.flush(30)
            t0 = time.perf_counter()
            p.commit_transaction(30)
            endtxn.append((time.perf_counter() - t0) * 1000)
        else:
            p.commit_transaction(30)
    elapsed = time.perf_counter() - start
    return (n // PER_TXN) * PER_TXN / elapsed


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


endtxn: list = []
print(f"records={N} per_txn={PER_TXN} value=100B rounds={ROUNDS} "
      f"linger.ms idempotent=5 transactional={TXN_LINGER}")
ratios = []
for r in range(ROUNDS):
    i = idempotent(N)
    x = transactional(N, endtxn)
    ratios.append(x / i)
    print(f"round {r + 1}: idempotent {i:,.0f} rec/s   transactional {x:,.0f} rec/s   "
          f"ratio {x / i:.0%}", flush=True)
print(f"median ratio transactional/idempotent: {statistics.median(ratios):.0%}")
print(f"EndTxn (commit, records already flushed) samples={len(endtxn)}: "
      f"p50 {pct(endtxn, 0.5):.2f} ms  p99 {pct(endtxn, 0.99):.2f} ms  max {max(endtxn):.2f} ms")
