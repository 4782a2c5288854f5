"""Durability through crashes and restarts: acks=all records survive kill -9, and the
idempotent producer neither loses nor duplicates records across a broker restart."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Producer

import kafka_helpers as kh


@pytest.mark.timeout(180)
def test_kill9_during_acks_all_produce_loses_no_acked_record(private_broker, uniq):
    b = private_broker()
    t = uniq("k9")
    kh.create_topic(b.kafka_bootstrap, t, 2)
    acked: dict[bytes, tuple[int, int]] = {}  # value -> (partition, offset)
    failed = []

    for cycle in range(3):
        p = Producer({"bootstrap.servers": b.kafka_bootstrap, "acks": "all",
                      "linger.ms": 1, "message.timeout.ms": 5000,
                      "enable.idempotence": False, "retries": 0})

        def on_delivery(err, msg):
            if err is None:
                acked[msg.value()] = (msg.partition(), msg.offset())
            else:
                failed.append(err)

        stop = threading.Event()

        def produce_forever(cycle=cycle):
            i = 0
            while not stop.is_set():
                try:
                    p.produce(t, key=f"k{i % 13}".encode(),
                              value=f"c{cycle}-{i:07d}".encode(), on_delivery=on_delivery)
                    i += 1
                except BufferError:
                    pass
                p.poll(0)
                if i % 200 == 0:
                    time.sleep(0.001)

        th = threading.Thread(target=produce_forever, daemon=True)
        before = len(acked)
        th.start()
        # Kill while acknowledgements are streaming in.
        kh.wait_for(lambda: len(acked) >= before + 3000, 60, what="acks before the kill")
        b.kill9()
        stop.set()
        th.join(10)
        p.flush(15)  # the rest fail (broker gone): they were never acknowledged
        b.start()

    assert len(acked) >= 9000
    got = kh.consume_to_end(b.kafka_bootstrap, t, timeout=60)
    where = {r.value: (r.partition, r.offset) for r in got}
    missing = [v for v in acked if v not in where]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    moved = [(v, acked[v], where[v]) for v in acked if acked[v] != where[v]]
    assert not moved, f"acknowledged records at other offsets: {moved[:5]}"
    # Offsets stay dense and unique after recovery.
    for part, recs in kh.by_partition(got).items():
        offs = [r.offset for r in recs]
        assert offs == sorted(set(offs)), f"partition {part}: offsets not unique/increasing"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "kill9"])
def test_idempotent_producer_across_restart(private_broker, uniq, crash):
    b = private_broker()
    t = uniq("idem")
    kh.create_topic(b.kafka_bootstrap, t, 1)
    n = 4000
    values = kh.numbered(n, "idem")
    p = Producer({"bootstrap.servers": b.kafka_bootstrap, "enable.idempotence": True,
                  "acks": "all", "linger.ms": 2, "message.timeout.ms": 60000,
                  "reconnect.backoff.max.ms": 200})
    delivered, errors = [], []

    def on_delivery(err, msg):
        (errors if err else delivered).append(err or msg.offset())

    restarted = threading.Event()

    def restart_midway():
        kh.wait_for(lambda: len(delivered) >= n // 3, 60, what="a third delivered")
        # Same port: the producer's in-flight and queued records are retried against
        # the restarted broker, which must recognise the ones it already stored.
        b.kill9() if crash else b.stop()
        b.start(same_port=True)
        restarted.set()

    th = threading.Thread(target=restart_midway, daemon=True)
    th.start()
    for i, v in enumerate(values):
        while True:
            try:
                p.produce(t, value=v, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        if i % 100 == 0:
            time.sleep(0.005)  # pacing: the restart falls in the middle of the stream
    assert p.flush(90) == 0
    th.join(60)
    assert restarted.is_set()
    assert not errors, f"delivery errors: {errors[:5]}"
    got = kh.consume_to_end(b.kafka_bootstrap, t, timeout=60)
    vals = [r.value for r in got]
    assert len(vals) == len(set(vals)), f"{len(vals) - len(set(vals))} duplicates"
    assert vals == values  # nothing lost, order kept
