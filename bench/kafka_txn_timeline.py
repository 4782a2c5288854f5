"""One transactional producer's timeline, from librdkafka's own debug log (confluent-kafka):
where the ~2.5 ms of a 100-record transaction go between the client and the broker.

    python bench/kafka_txn_timeline.py BOOTSTRAP

Runs 300 transactions (begin, 100 x 100 B, commit) with debug=protocol,eos,msg, prints the
log lines of transaction 150 with their time after begin_transaction() (the logger is called
from librdkafka's threads as each line is made, but it needs Python's GIL, so a line can be
stamped late, even after the next transaction began: read a few transactions' worth),
then the p50/p90 round trip (`rtt`, as librdkafka measures it) per request type and the
median time per transaction. Figures: bench/results/2026-12-07-kafka-txn-4.txt."""

import logging
import re
import statistics
import sys
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

BOOT = sys.argv[1]
name = f"timeline.{uuid.uuid4().hex[:8]}"
admin = AdminClient({"bootstrap.servers": BOOT})  # kept alive until the result
admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
time.sleep(0.3)
lines = []


class Keep(logging.Handler):
    def emit(self, r):
        lines.append((time.perf_counter(), r.getMessage()))


log = logging.getLogger("rdkafka")
log.setLevel(logging.DEBUG)
log.addHandler(Keep())
p = Producer({"bootstrap.servers": BOOT, "transactional.id": "timeline-" + uuid.uuid4().hex,
              "linger.ms": 5, "batch.num.messages": 10000, "debug": "protocol,eos,msg"},
             logger=log)
p.init_transactions(30)
marks = []
for i in range(300):
    t0 = time.perf_counter()
    p.begin_transaction()
    for _ in range(100):
        p.produce(name, b"x" * 100)
    p.poll(0)
    t1 = time.perf_counter()
    p.commit_transaction(30)
    marks.append((t0, t1, time.perf_counter()))
a, b, c = marks[150]
print(f"timeline of transaction 150 (ms after begin; produce() calls end at "
      f"{(b - a) * 1e3:.3f}, commit returns at {(c - a) * 1e3:.3f})")
for t, m in lines:
    if a <= t <= c + 0.0005:
        print(f"{(t - a) * 1e3:8.3f} {m[:150]}")
rtts: dict = {}
for _, m in lines:
    mm = re.search(r"Received (\w+)Response .*rtt ([0-9.]+)ms", m)
    if mm:
        rtts.setdefault(mm.group(1), []).append(float(mm.group(2)))
for k, v in rtts.items():
    v = sorted(v)
    print(f"{k:22s} n={len(v)} p50 {statistics.median(v):.3f} ms  "
          f"p90 {v[int(.9 * (len(v) - 1))]:.3f} ms")
print(f"per transaction (begin .. commit returns) p50 "
      f"{statistics.median([z - x for x, _, z in marks]) * 1e3:.2f} ms")
