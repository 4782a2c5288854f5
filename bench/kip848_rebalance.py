"""Time to a stable assignment after a member joins: KIP-848 vs classic protocol.

    python bench/kip848_rebalance.py BOOTSTRAP [ROUNDS]

Per round and mode, on a fresh 100-partition topic and a fresh group: 9 members join and
settle (every partition assigned, 11-12 each), then the clock starts and a 10th member
subscribes; the time reported is until every member holds exactly 10 partitions, all 100
are covered, and that stays so for 1 s (the 1 s is not counted). Each member polls in
its own thread. Modes:
  consumer   group.protocol=consumer (server-side uniform assignor)
  eager      classic protocol, range assignor (stop-the-world rebalance)
  coop       classic protocol, cooperative-sticky (incremental)"""

import statistics
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

BOOT = sys.argv[1]
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
PARTS = 100
MEMBERS = 10

MODES = {
    "consumer": {"group.protocol": "consumer"},
    "eager": {"group.protocol": "classic", "partition.assignment.strategy": "range"},
    "coop": {"group.protocol": "classic",
             "partition.assignment.strategy": "cooperative-sticky"},
}


class Member(threading.Thread):
    def __init__(self, conf, topic):
        super().__init__(daemon=True)
        self.c = Consumer(conf)
        self.topic = topic
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.held = 0

    def run(self):
        self.c.subscribe([self.topic])
        while not self.stop.is_set():
            self.c.poll(0.02)
            n = len(self.c.assignment())
            with self.lock:
                self.held = n

    def count(self):
        with self.lock:
            return self.held


def topic():
    name = f"bench.kip848.{uuid.uuid4().hex[:10]}"
    a = AdminClient({"bootstrap.servers": BOOT})
    a.create_topics([NewTopic(name, PARTS, 1)])[name].result(30)
    time.sleep(0.5)
    return name


def wait(pred, timeout, hold=1.0):
    """Time until pred() holds and keeps holding for `hold` seconds (hold not counted)."""
    t0 = time.monotonic()
    since = None
    while time.monotonic() - t0 < timeout:
        if pred():
            since = since or time.monotonic()
            if time.monotonic() - since >= hold:
                return since - t0
        else:
            since = None
        time.sleep(0.005)
    raise TimeoutError("no stable assignment")


def round_(mode):
    t = topic()
    group = f"bench.kip848.g.{uuid.uuid4().hex[:10]}"
    conf = {"bootstrap.servers": BOOT, "group.id": group, "enable.auto.commit": False,
            **MODES[mode]}
    members = []
    try:
        for _ in range(MEMBERS - 1):
            m = Member(conf, t)
            members.append(m)
            m.start()
        wait(lambda: sum(m.count() for m in members) == PARTS
             and all(m.count() >= PARTS // (MEMBERS - 1) for m in members), 120)
        m = Member(conf, t)
        members.append(m)
        t0 = time.monotonic()
        m.start()
        took = wait(lambda: all(x.count() == PARTS // MEMBERS for x in members), 120)
        return took
    finally:
        for m in members:
            m.stop.set()
        for m in members:
            m.join(10)
        for m in members:
            m.c.close()


def main():
    results = {mode: [] for mode in MODES}
    for r in range(ROUNDS):
        for mode in MODES:
            s = round_(mode)
            results[mode].append(s)
            print(f"round {r + 1} {mode:9s} {s * 1000:8.0f} ms to a stable assignment "
                  f"after the 10th member joined", flush=True)
    print()
    for mode, xs in results.items():
        print(f"{mode:9s} median {statistics.median(xs) * 1000:8.0f} ms  "
              f"min {min(xs) * 1000:6.0f}  max {max(xs) * 1000:6.0f}  ({len(xs)} rounds)")


if __name__ == "__main__":
    main()
