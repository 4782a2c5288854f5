"""Transactional vs idempotent produce with confluent-kafka, same broker, same run.

    python bench/kafka_txn_bench.py BOOTSTRAP [RECORDS] [ROUNDS]

Each round runs, on fresh one-partition topics, 100-byte records:
  idempotent     enable.idempotence, acks=all, produce RECORDS then flush
  transactional  transactional.id, 100 records per transaction (begin, produce 100,
                 commit), RECORDS in all
and times EndTxn alone: for a sample of transactions the records are flushed first, so
commit_transaction() is only the EndTxn round trip (the coordinator logs PrepareCommit,
fsyncs, answers; markers follow). Prints records/s per mode per round, their ratio, and
EndTxn p50/p99/max over all samples.

With PRODUCERS=N (environment, default 1) each mode runs N producers at once, each in its
own process and on its own partition of an N-partition topic (the transactional ones with
their own transactional.id each), RECORDS split between them; records/s is the total over
the wall time from the common start (after every producer's setup) to the last flush or
commit."""

import multiprocessing as mp
import os
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
TXN_LINGER = int(os.environ.get("TXN_LINGER_MS", "5"))
PRODUCERS = int(os.environ.get("PRODUCERS", "1"))
VALUE = b"x" * 100


def topic(partitions: int) -> str:
    name = f"bench.txn.{uuid.uuid4().hex[:10]}"
    a = AdminClient({"bootstrap.servers": BOOT})
    a.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    time.sleep(0.3)
    return name


def produce_all(p: Producer, t: str, part: int, n: int) -> None:
    for _ in range(n):
        while True:
            try:
                p.produce(t, VALUE, partition=part)
                break
            except BufferError:
                p.poll(0.001)
    p.poll(0)


def idempotent_worker(t: str, part: int, n: int, barrier, out) -> None:
    p = Producer({"bootstrap.servers": BOOT, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5, "batch.num.messages": 10000})
    # Connected and holding its producer id before the clock starts.
    p.list_topics(t, timeout=30)
    produce_all(p, t, part, 1)
    assert p.flush(30) == 0
    barrier.wait()
    start = time.monotonic()
    produce_all(p, t, part, n)
    assert p.flush(120) == 0
    out.put((start, time.monotonic(), n, []))


def transactional_worker(t: str, part: int, n: int, barrier, out) -> None:
    p = Producer({"bootstrap.servers": BOOT, "transactional.id": f"bench-{uuid.uuid4().hex}",
                  "linger.ms": TXN_LINGER, "batch.num.messages": 10000})
    p.init_transactions(30)
    endtxn = []
    barrier.wait()
    start = time.monotonic()
    txns = n // PER_TXN
    for i in range(txns):
        p.begin_transaction()
        produce_all(p, t, part, PER_TXN)
        if i % 20 == 0:
            # A sample: records flushed first, so the commit is EndTxn alone.
            p.flush(30)
            t0 = time.perf_counter()
            p.commit_transaction(30)
            endtxn.append((time.perf_counter() - t0) * 1000)
        else:
            p.commit_transaction(30)
    out.put((start, time.monotonic(), txns * PER_TXN, endtxn))


def run(worker, n: int, endtxn: list) -> float:
    """Runs PRODUCERS workers at once; returns total records/s over the common wall time."""
    t = topic(PRODUCERS)
    barrier, out = mp.Barrier(PRODUCERS), mp.Queue()
    procs = [mp.Process(target=worker, args=(t, i, n // PRODUCERS, barrier, out))
             for i in range(PRODUCERS)]
    for pr in procs:
        pr.start()
    results = [out.get(timeout=600) for _ in procs]
    for pr in procs:
        pr.join()
        assert pr.exitcode == 0, f"a producer process failed ({pr.exitcode})"
    for _, _, _, samples in results:
        endtxn.extend(samples)
    start = min(r[0] for r in results)
    end = max(r[1] for r in results)
    return sum(r[2] for r in results) / (end - start)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


if __name__ == "__main__":
    endtxn: list = []
    print(f"records={N} per_txn={PER_TXN} value=100B rounds={ROUNDS} producers={PRODUCERS} "
          f"linger.ms idempotent=5 transactional={TXN_LINGER}")
    ratios = []
    for r in range(ROUNDS):
        i = run(idempotent_worker, N, [])
        x = run(transactional_worker, N, endtxn)
        ratios.append(x / i)
        print(f"round {r + 1}: idempotent {i:,.0f} rec/s   transactional {x:,.0f} rec/s   "
              f"ratio {x / i:.0%}", flush=True)
    print(f"median ratio transactional/idempotent: {statistics.median(ratios):.0%}")
    print(f"EndTxn (commit, records already flushed) samples={len(endtxn)}: "
          f"p50 {pct(endtxn, 0.5):.2f} ms  p99 {pct(endtxn, 0.99):.2f} ms  "
          f"max {max(endtxn):.2f} ms")
