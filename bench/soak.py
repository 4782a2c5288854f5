#!/usr/bin/env python3
"""Soak driver: mixed AMQP and Kafka load with `kill -9` of the broker every few minutes.

One FerryMQ on one data dir (fixed ports, restarted on the same ones after each kill), and
for the whole run:
  - AMQP (pika, publisher confirms): publishers of persistent messages to two durable
    queues (`soak.durable`, and `soak.prio` with x-max-priority), a publisher of transient
    messages to a non-durable queue (`soak.transient`); bodies of 16 B to 200 KiB (the
    largest span several frames); consumers with manual acks on all three queues.
  - Kafka (confluent-kafka): a producer with acks=all to `soak-durable` (every record whose
    delivery report succeeded is recorded), a producer with acks=0 to `soak-loose`, and a
    consumer group reading both.
  - A killer: every --kill-every seconds SIGKILL, then restart on the same data dir.
  - An RSS sampler (every 100 ms, /proc/PID/status of whichever broker process runs).
At the end the publishers stop, the broker is restarted once more (so the check also covers
recovery), every durable queue is drained and both Kafka partitions are read from the
beginning. The checker fails the run if a confirmed persistent message or an acknowledged
(acks=all) record is missing, or if the peak RSS went above watermark * (1 + margin).
Transient messages and acks=0 records may be lost across a kill -9: they are only counted.

    .venv/bin/python bench/soak.py --duration 3600 --kill-every 180 --watermark 400MB
Exit code 0 when the check passes; a summary goes to stdout (and --summary FILE as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import pika
import pika.exceptions
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from ferrybroker import Broker  # noqa: E402

DURABLE_QUEUES = ("soak.durable", "soak.prio")
TRANSIENT_QUEUE = "soak.transient"
KAFKA_DURABLE = "soak-durable"
KAFKA_LOOSE = "soak-loose"
PARTITIONS = 2
SIZES = (16, 16, 100, 1024, 1024, 4096, 16384, 200 * 1024)


def parse_size(s: str) -> int:
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6,
             "gb": 10**9, "b": 1}
    low = s.strip().lower()
    for u, m in units.items():
        if low.endswith(u):
            return int(float(low[: -len(u)]) * m)
    return int(low)


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Ledger:
    """Thread-safe sets of ids: what the broker confirmed, what consumers saw."""

    def __init__(self):
        self.lock = threading.Lock()
        self.confirmed: set[str] = set()       # AMQP persistent, confirmed
        self.consumed: set[str] = set()        # AMQP durable queues, delivered
        self.transient_confirmed = 0
        self.transient_consumed = 0
        self.acked: set[str] = set()           # Kafka acks=all, delivery report ok
        self.loose_sent = 0
        self.kafka_consumed = 0
        self.publish_errors = 0
        self.reconnects = 0

    def add(self, name: str, v: str):
        with self.lock:
            getattr(self, name).add(v)

    def inc(self, name: str, n: int = 1):
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


class Soak:
    def __init__(self, args):
        self.args = args
        self.stop = threading.Event()        # load threads stop
        self.ledger = Ledger()
        self.up = threading.Event()          # broker accepting connections
        self.kills = 0
        self.rss_peak = 0
        self.rss_samples = 0
        self.rss_sum = 0
        self.restart_times: list[float] = []
        base = Path(tempfile.mkdtemp(prefix="ferrymq-soak-", dir=args.work_dir))
        self.base = base
        self.broker = Broker(data_dir=base / "data", kafka=True,
                             amqp_port=free_port(), kafka_port=free_port(),
                             extra_args=["--memory-high-watermark", args.watermark],
                             start_timeout=60)
        self.payload = os.urandom(max(SIZES))

    # ------------------------------------------------------------------ broker
    def start_broker(self, first: bool = False):
        t0 = time.monotonic()
        self.broker.start(same_port=not first)
        self.restart_times.append(time.monotonic() - t0)
        self.up.set()

    def killer(self):
        while not self.stop.wait(self.args.kill_every):
            self.kill_and_restart()

    def kill_and_restart(self):
        self.up.clear()
        self.broker.kill9()
        self.kills += 1
        print(f"[{self.elapsed():7.1f}s] kill -9 #{self.kills}", flush=True)
        self.start_broker()

    def sampler(self):
        while not self.sampler_stop.is_set():
            proc = self.broker.proc
            if proc is not None and proc.poll() is None:
                try:
                    r = rss_of(proc.pid)
                except OSError:
                    r = 0
                if r:
                    self.rss_peak = max(self.rss_peak, r)
                    self.rss_samples += 1
                    self.rss_sum += r
            time.sleep(0.1)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # ------------------------------------------------------------------ AMQP
    def amqp_connect(self):
        while not self.stop.is_set() or self.draining:
            self.up.wait(5)
            try:
                p = pika.URLParameters(self.broker.url)
                p.connection_attempts = 1
                p.socket_timeout = 5
                p.blocked_connection_timeout = 300
                p.heartbeat = 30
                c = pika.BlockingConnection(p)
                ch = c.channel()
                for q in DURABLE_QUEUES:
                    ch.queue_declare(q, durable=True,
                                     arguments={"x-max-priority": 5} if q == "soak.prio" else None)
                ch.queue_declare(TRANSIENT_QUEUE, durable=False)
                return c, ch
            except (pika.exceptions.AMQPError, OSError):
                self.ledger.inc("reconnects")
                time.sleep(0.2)
        return None, None

    def amqp_publisher(self, name: str, durable: bool):
        rnd = random.Random(name)
        seq = 0
        while not self.stop.is_set():
            c, ch = self.amqp_connect()
            if c is None:
                return
            try:
                ch.confirm_delivery()
                while not self.stop.is_set():
                    seq += 1
                    mid = f"{name}-{seq}"
                    size = rnd.choice(SIZES)
                    body = mid.encode() + b"|" + self.payload[:size]
                    if durable:
                        q = DURABLE_QUEUES[seq % 2]
                        props = pika.BasicProperties(delivery_mode=2, message_id=mid,
                                                     priority=seq % 6)
                    else:
                        q = TRANSIENT_QUEUE
                        props = pika.BasicProperties(delivery_mode=1, message_id=mid)
                    try:
                        ch.basic_publish("", q, body, props, mandatory=False)
                    except (pika.exceptions.NackError, pika.exceptions.UnroutableError):
                        self.ledger.inc("publish_errors")
                        continue
                    if durable:
                        self.ledger.add("confirmed", mid)
                    else:
                        self.ledger.inc("transient_confirmed")
                    if self.args.publish_pause:
                        time.sleep(self.args.publish_pause)
                c.close()
            except (pika.exceptions.AMQPError, OSError, AttributeError):
                # Connection lost (kill -9): the message in flight is not recorded.
                self.ledger.inc("reconnects")
                time.sleep(0.1)

    def amqp_consumer(self, queues: tuple[str, ...], durable: bool):
        """Consume with manual acks until the load stops; record ids before acking."""
        while not self.stop.is_set():
            c, ch = self.amqp_connect()
            if c is None:
                return
            try:
                ch.basic_qos(prefetch_count=200)
                for q in queues:
                    def on_msg(chan, method, props, body, durable=durable):
                        self._record_amqp(body, durable)
                        chan.basic_ack(method.delivery_tag)
                    ch.basic_consume(q, on_msg, auto_ack=False)
                while not self.stop.is_set():
                    c.process_data_events(time_limit=0.5)
                c.close()
            except (pika.exceptions.AMQPError, OSError, AttributeError):
                self.ledger.inc("reconnects")
                time.sleep(0.1)

    def amqp_drain(self, idle_limit: float = 3.0):
        """After the load: consume every durable queue until it stays empty for a while."""
        while True:
            c, ch = self.amqp_connect()
            try:
                ch.basic_qos(prefetch_count=500)
                for q in DURABLE_QUEUES:
                    for method, _props, body in ch.consume(q, inactivity_timeout=idle_limit):
                        if method is None:
                            break
                        self._record_amqp(body, True)
                        ch.basic_ack(method.delivery_tag)
                    ch.cancel()
                c.close()
                return
            except (pika.exceptions.AMQPError, OSError, AttributeError):
                time.sleep(0.2)

    def _record_amqp(self, body: bytes, durable: bool):
        mid = body.split(b"|", 1)[0].decode()
        if durable:
            self.ledger.add("consumed", mid)
        else:
            self.ledger.inc("transient_consumed")

    # ------------------------------------------------------------------ Kafka
    def kafka_conf(self) -> dict:
        return {"bootstrap.servers": self.broker.kafka_bootstrap,
                "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 1000,
                "log_level": 0}

    def kafka_producer(self, topic: str, acks: str):
        conf = self.kafka_conf() | {"acks": acks, "linger.ms": 5,
                                    "message.timeout.ms": 120000}
        p = Producer(conf)
        rnd = random.Random(topic)
        seq = 0

        def report(err, msg):
            if err is None and acks == "all":
                self.ledger.add("acked", msg.key().decode())

        while not self.stop.is_set():
            seq += 1
            key = f"{topic}-{seq}"
            size = rnd.choice(SIZES[:-1])
            try:
                p.produce(topic, self.payload[:size], key=key.encode(),
                          partition=seq % PARTITIONS, on_delivery=report)
                if acks != "all":
                    self.ledger.inc("loose_sent")
            except BufferError:
                p.poll(0.1)
                continue
            p.poll(0)
            if seq % 50 == 0:
                p.poll(0.01)
            if self.args.kafka_rate and seq % 20 == 0:
                # Paced: unpaced, librdkafka fills the disk (several GB in minutes).
                time.sleep(20 / self.args.kafka_rate)
        p.flush(150)

    def kafka_consumer(self):
        c = Consumer(self.kafka_conf() | {"group.id": "soak-group",
                                          "auto.offset.reset": "earliest",
                                          "enable.auto.commit": True})
        c.subscribe([KAFKA_DURABLE, KAFKA_LOOSE])
        while not self.stop.is_set():
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                self.ledger.inc("kafka_consumed")
        c.close()

    def kafka_read_all(self) -> set[str]:
        """Every key in soak-durable, read from offset 0 to the high watermark."""
        c = Consumer(self.kafka_conf() | {"group.id": f"soak-check-{os.getpid()}",
                                          "enable.auto.commit": False,
                                          "auto.offset.reset": "earliest"})
        keys: set[str] = set()
        ends = {}
        for p in range(PARTITIONS):
            for attempt in range(10):
                try:
                    _lo, hi = c.get_watermark_offsets(TopicPartition(KAFKA_DURABLE, p),
                                                      timeout=30)
                    break
                except Exception:  # noqa: BLE001 (KafkaException while it reconnects)
                    if attempt == 9:
                        raise
                    time.sleep(1)
            ends[p] = hi
        c.assign([TopicPartition(KAFKA_DURABLE, p, 0) for p in range(PARTITIONS)])
        pos = {p: 0 for p in range(PARTITIONS)}
        deadline = time.monotonic() + 600
        while any(pos[p] < ends[p] for p in pos) and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    print("kafka read error:", m.error(), flush=True)
                continue
            keys.add(m.key().decode())
            pos[m.partition()] = m.offset() + 1
        c.close()
        return keys

    def create_topics(self):
        admin = AdminClient({"bootstrap.servers": self.broker.kafka_bootstrap})
        fs = admin.create_topics([NewTopic(t, PARTITIONS, 1)
                                  for t in (KAFKA_DURABLE, KAFKA_LOOSE)])
        for f in fs.values():
            f.result(30)

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        a = self.args
        self.draining = False
        self.sampler_stop = threading.Event()
        self.t0 = time.monotonic()
        self.start_broker(first=True)
        threading.Thread(target=self.sampler, daemon=True).start()
        self.create_topics()
        threads = [
            threading.Thread(target=self.amqp_publisher, args=(f"dur{i}", True))
            for i in range(a.amqp_publishers)
        ] + [
            threading.Thread(target=self.amqp_publisher, args=("tr", False)),
            threading.Thread(target=self.amqp_consumer, args=(DURABLE_QUEUES, True)),
            threading.Thread(target=self.amqp_consumer, args=((TRANSIENT_QUEUE,), False)),
            threading.Thread(target=self.kafka_producer, args=(KAFKA_DURABLE, "all")),
            threading.Thread(target=self.kafka_producer, args=(KAFKA_LOOSE, "0")),
            threading.Thread(target=self.kafka_consumer),
        ]
        for t in threads:
            t.daemon = True
            t.start()
        killer = threading.Thread(target=self.killer, daemon=True)
        killer.start()
        report_every = max(10.0, min(60.0, a.duration / 20))
        next_report = report_every
        while self.elapsed() < a.duration:
            time.sleep(1)
            if self.elapsed() >= next_report:
                next_report += report_every
                self.progress()
        self.stop.set()
        killer.join()
        for t in threads:
            t.join(180)
        load_secs = self.elapsed()
        # One more kill -9 after the load stopped: the check then covers recovery of
        # everything confirmed so far, including the last second of publishes.
        self.kill_and_restart()
        self.draining = True
        drained_before = len(self.ledger.consumed)
        self.amqp_drain()
        kafka_keys = self.kafka_read_all()
        self.sampler_stop.set()
        L = self.ledger
        lost_amqp = sorted(L.confirmed - L.consumed)
        lost_kafka = sorted(L.acked - kafka_keys)
        limit = parse_size(a.watermark) * (1 + a.margin)
        summary = {
            "duration_s": round(load_secs, 1),
            "kills": self.kills,
            "restart_s_max": round(max(self.restart_times), 2),
            "amqp_confirmed_persistent": len(L.confirmed),
            "amqp_consumed_persistent_distinct": len(L.consumed),
            "amqp_drained_at_end": len(L.consumed) - drained_before,
            "amqp_lost_persistent": len(lost_amqp),
            "amqp_transient_confirmed": L.transient_confirmed,
            "amqp_transient_consumed": L.transient_consumed,
            "kafka_acked_all": len(L.acked),
            "kafka_read_back_distinct": len(kafka_keys),
            "kafka_lost_acked": len(lost_kafka),
            "kafka_acks0_sent": L.loose_sent,
            "kafka_consumed_group": L.kafka_consumed,
            "amqp_publish_nacks": L.publish_errors,
            "client_reconnects": L.reconnects,
            "rss_peak_bytes": self.rss_peak,
            "rss_mean_bytes": self.rss_sum // max(1, self.rss_samples),
            "watermark_bytes": parse_size(a.watermark),
            "rss_limit_bytes": int(limit),
            "lost_examples": (lost_amqp[:5] + lost_kafka[:5]),
        }
        summary["ok"] = (not lost_amqp and not lost_kafka and self.rss_peak <= limit
                         and len(L.confirmed) > 0 and len(L.acked) > 0)
        return summary

    def progress(self):
        L = self.ledger
        print(f"[{self.elapsed():7.1f}s] kills={self.kills} confirmed={len(L.confirmed)} "
              f"consumed={len(L.consumed)} transient={L.transient_confirmed}/"
              f"{L.transient_consumed} kafka_acked={len(L.acked)} "
              f"kafka_consumed={L.kafka_consumed} rss_peak={self.rss_peak / 1e6:.0f}MB",
              flush=True)

    def cleanup(self):
        self.broker.kill9() if self.broker.running else None
        shutil.rmtree(self.base, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=3600, help="seconds of load")
    ap.add_argument("--kill-every", type=float, default=180, help="seconds between kill -9")
    ap.add_argument("--watermark", default="400MB", help="--memory-high-watermark")
    ap.add_argument("--margin", type=float, default=0.25,
                    help="RSS may exceed the watermark by this fraction")
    ap.add_argument("--amqp-publishers", type=int, default=2)
    ap.add_argument("--publish-pause", type=float, default=0.0,
                    help="seconds each publisher sleeps between messages")
    ap.add_argument("--kafka-rate", type=float, default=300,
                    help="records/s per Kafka producer (0: as fast as possible)")
    ap.add_argument("--work-dir", default=None, help="parent of the data dir")
    ap.add_argument("--summary", default=None, help="write the summary as JSON here")
    args = ap.parse_args(argv)
    soak = Soak(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    try:
        summary = soak.run()
    finally:
        soak.cleanup()
    for k, v in summary.items():
        print(f"{k}: {v}")
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
