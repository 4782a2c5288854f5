"""The memory alarm under a flood: pika publishers (confirms on) pour 1 KiB transient
messages into a non-durable queue and a priority queue with no consumer, with the broker
started at --memory-high-watermark 300MB. Publishers see connection.blocked and stop
getting confirms; a kafka-python producer started during the alarm is throttled (its
Produce requests held, answered with throttle_time_ms); RSS stays under the watermark
plus MARGIN. When consumers start, every confirmed message and every acknowledged record
is delivered and the publishers get connection.unblocked.
"""

from __future__ import annotations

import threading
import time

import pika
from kafka import KafkaConsumer, KafkaProducer

from conftest import RssSampler, alarm_metric, node, params, wait_until

WATERMARK = 300_000_000
# RSS may exceed the alarm's measure (the allocator's allocated bytes) by what the
# allocator keeps resident (fragmentation, dirty pages it has not returned yet) and by
# what arrives between the alarm and the publishers' sockets going unread.
MARGIN = 0.25
PUBLISHERS = 4
# Each queue keeps at most an 8 MiB head in memory and pages the rest to disk, so a flood
# into a couple of queues never reaches the watermark (tests/e2e/test_spill.py and the
# lapin `spill` tests cover that). The alarm is the net above the queues: here the queue
# memory budget is raised above the watermark and the flood spreads over enough queues
# that their heads alone (48 x 8 MiB) would pass it.
PER_KIND = 24
PLAIN = [f"flood-{j}" for j in range(PER_KIND)]
PRIO = [f"flood-prio-{j}" for j in range(PER_KIND)]
QUEUES = PLAIN + PRIO
DRAINERS = 4
BODY = 1024


class Publisher(threading.Thread):
    """Publishes until stopped; with `confirm`, each publish returns once confirmed,
    without, once written (pika blocks while its output cannot be flushed)."""

    def __init__(self, broker, i: int, stop: threading.Event, confirm: bool):
        super().__init__(daemon=True)
        self.broker, self.i, self.stop_evt, self.confirm = broker, i, stop, confirm
        self.prio = i % 2 == 1
        self.queues = PRIO if self.prio else PLAIN
        self.confirmed: list[bytes] = []
        self.blocked = threading.Event()
        self.unblocked = threading.Event()
        self.blocked_reason = None
        self.error: BaseException | None = None

    def run(self):
        try:
            conn = pika.BlockingConnection(params(self.broker))

            def on_blocked(_c, frame):
                self.blocked_reason = frame.method.reason
                self.blocked.set()

            # BlockingConnection hands these callbacks over only inside
            # process_data_events(), which a publisher stuck in basic_publish never calls:
            # register them on the underlying connection, which calls them as the frames
            # arrive.
            conn._impl.add_on_connection_blocked_callback(on_blocked)
            conn._impl.add_on_connection_unblocked_callback(
                lambda _c, _f: self.unblocked.set())
            ch = conn.channel()
            if self.confirm:
                ch.confirm_delivery()
            n = 0
            while not self.stop_evt.is_set():
                tag = f"p{self.i}-{n}".encode()
                body = tag + b"." * (BODY - len(tag))
                props = pika.BasicProperties(delivery_mode=1,
                                             priority=n % 10 if self.prio else None)
                # With confirms: returns once the broker confirmed it (raises on a nack).
                ch.basic_publish("", self.queues[n % PER_KIND], body, properties=props)
                self.confirmed.append(tag)
                n += 1
            # Without confirms, closing flushes what pika still holds: the broker reads
            # it all before connection.close, so every accepted message is stored.
            conn.close()
        except BaseException as e:  # reported by the test
            self.error = e


def drain(broker, queues: list, got: set, publishers_done: threading.Event,
          timeout: float = 90.0) -> int:
    """Consumes `queues` pass after pass (each until idle for 0.3 s) until a whole pass
    began after the publishers were done."""
    conn = pika.BlockingConnection(params(broker))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2000)
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        done_before = publishers_done.is_set()
        for queue in queues:
            last = None
            for method, _props, body in ch.consume(queue, inactivity_timeout=0.3):
                if method is None:
                    break
                got.add(body[:body.index(b".")])
                n += 1
                last = method.delivery_tag
                if n % 500 == 0:
                    ch.basic_ack(last, multiple=True)
            if last is not None:
                ch.basic_ack(last, multiple=True)
            ch.cancel()
        if done_before or time.monotonic() > deadline:
            break
    conn.close()
    return n


def test_flood_blocks_publishers_and_throttles_producers(brokers):
    b = brokers("--memory-high-watermark", "300MB", "--queue-memory-budget", "4GiB",
                kafka=True)
    n0 = node(b)
    assert n0["mem_limit"] == WATERMARK
    assert n0["mem_alarm"] is False
    setup = pika.BlockingConnection(params(b))
    sch = setup.channel()
    for q in PLAIN:
        sch.queue_declare(q, durable=False)
    for q in PRIO:
        sch.queue_declare(q, durable=False, arguments={"x-max-priority": 10})
    setup.close()

    sampler = RssSampler(b.proc.pid)
    stop = threading.Event()
    # Two publishers wait for each confirm, two publish without confirms (faster).
    pubs = [Publisher(b, i, stop, confirm=i < 2) for i in range(PUBLISHERS)]
    t0 = time.monotonic()
    for p in pubs:
        p.start()
    try:
        try:
            wait_until(lambda: all(p.blocked.is_set() or p.error for p in pubs), timeout=100,
                       what="every publisher blocked")
        except AssertionError:
            raise AssertionError(f"not every publisher blocked: {node(b)['mem_used']} bytes used, "
                                 f"published {[len(p.confirmed) for p in pubs]}, "
                                 f"blocked {[p.blocked.is_set() for p in pubs]}")
        for p in pubs:
            assert p.error is None, p.error
            assert p.blocked_reason == "low on memory"
        t_blocked = time.monotonic() - t0
        flood_count = sum(len(p.confirmed) for p in pubs if p.confirm)
        nd = node(b)
        assert nd["mem_alarm"] is True
        assert nd["mem_used"] > WATERMARK * 0.9
        assert alarm_metric(b) == 1

        # A Kafka producer during the alarm: its Produce requests are held.
        producer = KafkaProducer(bootstrap_servers=b.kafka_bootstrap, acks=1,
                                 linger_ms=5, retries=0)
        futures = [producer.send("alarm-topic", f"r{i}".encode()) for i in range(2000)]
        time.sleep(3)
        # Blocked means blocked: at most the in-flight publish of each confirming
        # publisher is confirmed meanwhile.
        during = sum(len(p.confirmed) for p in pubs if p.confirm)
        assert during - flood_count <= 2
        assert not all(f.is_done for f in futures), "no Produce should be answered yet"

        # Consumers drain; the alarm clears; publishers are unblocked and stop.
        stop.set()
        got: set[bytes] = set()
        t_drain = time.monotonic()
        drained = {}
        publishers_done = threading.Event()

        def drain_queues(k, qs):
            drained[k] = drain(b, qs, got, publishers_done, timeout=90)

        # Drain until the publishers have all stopped and the queues are empty.
        threads = [threading.Thread(target=drain_queues, args=(k, QUEUES[k::DRAINERS]))
                   for k in range(DRAINERS)]
        for t in threads:
            t.start()
        for p in pubs:
            p.join(60)
            assert not p.is_alive()
            assert p.error is None, p.error
        # The confirming publishers were waiting for a confirm when the alarm cleared, so
        # pika had dispatched connection.unblocked to them.
        assert all(p.unblocked.is_set() for p in pubs if p.confirm)
        publishers_done.set()
        for t in threads:
            t.join(120)
        drain_s = time.monotonic() - t_drain
        producer.flush(timeout=60)
        records = [f.get(timeout=30) for f in futures]
        metrics = producer.metrics()
        producer.close()
    finally:
        stop.set()
        peak = sampler.stop()

    confirmed = {tag for p in pubs for tag in p.confirmed}
    total = sum(len(p.confirmed) for p in pubs)
    assert len(confirmed) == total
    missing = confirmed - got
    assert not missing, f"{len(missing)} confirmed or accepted messages not delivered, e.g. {sorted(missing)[:5]}"
    assert peak <= WATERMARK * (1 + MARGIN), f"peak RSS {peak} above {WATERMARK} + {MARGIN:.0%}"
    assert node(b)["mem_alarm"] is False
    assert alarm_metric(b) == 0

    # Every acknowledged record is there, and the producer saw throttle time.
    assert len(records) == 2000 and all(r.offset >= 0 for r in records)
    # kafka-python's sensor of the throttle_time_ms its responses carried.
    throttle = max((v for group in metrics.values() for k, v in group.items()
                    if k.endswith("throttle-time-max")), default=0)
    assert throttle >= 1000, f"produce-throttle-time-max {throttle}"
    consumer = KafkaConsumer("alarm-topic", bootstrap_servers=b.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000,
                             enable_auto_commit=False)
    values = {m.value for m in consumer}
    consumer.close()
    assert values == {f"r{i}".encode() for i in range(2000)}
    print(f"\nflood: {total} confirmed 1 KiB messages, blocked after {t_blocked:.1f}s, "
          f"peak RSS {peak / 1e6:.0f} MB (watermark {WATERMARK / 1e6:.0f} MB), "
          f"drained in {drain_s:.1f}s, producer throttle max {throttle:.0f} ms")
