"""The power-cut harness: the `ferrymq-powercut` FUSE file system, the load (AMQP
publishers with confirms, a delayed exchange, Kafka acks=all producers) and the check
that every confirmed message and acknowledged record came back.

A `Ledger` is what the clients were told: confirmed AMQP messages per queue, declared
queues, acknowledged Kafka records with their (partition, offset). `check()` reads the
restarted broker and returns what is missing."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pika
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from amqp_helpers import params_for  # noqa: E402
from ferrybroker import REPO_ROOT, Broker, resolve_binary  # noqa: E402

POWERCUT_BIN = resolve_binary(os.environ.get("FERRYMQ_POWERCUT_BIN")
                              or REPO_ROOT / "target" / "release" / "ferrymq-powercut")

QUEUES = ["pc.q0", "pc.q1"]             # one confirming publisher each
CONSUMED_QUEUE = "pc.q0"                # also has a consumer acking what it gets
DELAYED_X, DELAYED_Q = "pc.delayed.x", "pc.delayed"
TOPIC = "pc.k3"                         # created with 3 partitions by CreateTopics
AUTO_TOPIC = "pc.auto"                  # created by the first produce to it


# ---------------------------------------------------------------- the file system
class PowercutFs:
    """`ferrymq-powercut mount` on `<work>/mnt-<tag>`, contents in `<work>/backing-<tag>`,
    starting from `source` (a materialised cut) if given."""

    def __init__(self, work: Path, tag: str, source: Path | None = None,
                 lies: tuple[str, ...] = ()):
        if not POWERCUT_BIN.exists():
            raise RuntimeError(f"{POWERCUT_BIN} not found: cargo build --release -p ferrymq-powercut")
        self.mnt = work / f"mnt-{tag}"
        self.backing = work / f"backing-{tag}"
        self.control = work / f"control-{tag}.sock"
        self.mnt.mkdir(parents=True)
        cmd = [str(POWERCUT_BIN), "mount", "--mountpoint", str(self.mnt),
               "--backing", str(self.backing), "--control", str(self.control)]
        if source is not None:
            cmd += ["--from", str(source)]
        for lie in lies:
            cmd += ["--lie", lie]
        self.log = open(work / f"powercut-{tag}.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        if "mounted" not in line:
            self.proc.wait(10)
            raise RuntimeError(f"ferrymq-powercut did not mount: {line!r} "
                               f"(log {work}/powercut-{tag}.log)")

    def command(self, line: str) -> dict[str, str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(120)
            s.connect(str(self.control))
            s.sendall(line.encode() + b"\n")
            answer = s.makefile().readline().strip()
        if not answer.startswith("ok"):
            raise RuntimeError(f"ferrymq-powercut {line!r}: {answer}")
        return dict(kv.split("=", 1) for kv in answer.split()[1:])

    def cut(self, into: Path) -> dict[str, str]:
        """Cuts the power: the mount freezes, the durable state is written to `into`."""
        return self.command(f"cut {into}")

    def stats(self) -> dict[str, str]:
        return self.command("stats")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command("quit")
            except OSError:
                self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        subprocess.run(["umount", "-l", str(self.mnt)], stderr=subprocess.DEVNULL, check=False)
        self.log.close()


def start_broker(data_dir: Path, work: Path, tag: str) -> Broker:
    """A broker on `data_dir` (on the mount) whose log and cwd stay outside the mount."""
    existed = data_dir.exists()
    b = Broker(data_dir=data_dir, kafka=True, start_timeout=60)
    if not existed:
        # The harness's mkdir is not the broker's: let the broker create its data dir
        # (durably) as it would on a machine's first boot.
        data_dir.rmdir()
    b.base_dir = work
    b.log_path = work / f"ferrymq-{tag}.log"
    return b.start()


# ---------------------------------------------------------------- what clients were told
@dataclass
class Ledger:
    confirmed: dict[str, set[bytes]] = field(default_factory=dict)   # queue -> bodies
    published: dict[str, set[bytes]] = field(default_factory=dict)   # queue -> attempted
    acked_by_consumer: set[bytes] = field(default_factory=set)
    declared_queues: set[str] = field(default_factory=set)
    records: dict[tuple[str, int, int], bytes] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def confirm(self, queue: str, body: bytes) -> None:
        with self.lock:
            self.confirmed.setdefault(queue, set()).add(body)

    def attempt(self, queue: str, body: bytes) -> None:
        with self.lock:
            self.published.setdefault(queue, set()).add(body)

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {"confirmed": sum(len(v) for v in self.confirmed.values()),
                    "records": len(self.records), "queues": len(self.declared_queues),
                    "topics": len(self.topics)}


def amqp_connect(broker: Broker) -> pika.BlockingConnection:
    return pika.BlockingConnection(params_for(broker.url))


def setup(broker: Broker, ledger: Ledger) -> None:
    """Declares the durable queues, the delayed exchange and the Kafka topic; each is in
    the ledger once its declare-ok / CreateTopics answer came."""
    conn = amqp_connect(broker)
    ch = conn.channel()
    for q in QUEUES + [DELAYED_Q]:
        ch.queue_declare(q, durable=True)
        ledger.declared_queues.add(q)
    ch.exchange_declare(DELAYED_X, "x-delayed-message", durable=True,
                        arguments={"x-delayed-type": "direct"})
    ch.queue_bind(DELAYED_Q, DELAYED_X, routing_key="d")
    conn.close()
    admin = AdminClient({"bootstrap.servers": broker.kafka_bootstrap})
    for fut in admin.create_topics([NewTopic(TOPIC, 3, 1)]).values():
        fut.result(30)
    ledger.topics.add(TOPIC)


# ---------------------------------------------------------------- the load
class Worker(threading.Thread):
    def __init__(self, name: str):
        super().__init__(daemon=True, name=name)
        self.stop_flag = threading.Event()
        self.first_ack = threading.Event()
        self.error: BaseException | None = None

    def stop(self) -> None:
        self.stop_flag.set()


class AmqpPublisher(Worker):
    """Persistent messages with confirms, one at a time (each basic_publish returns once
    the broker confirmed it). With `fresh_every`, also declares a new durable queue every
    that many messages and publishes to it: directories created mid-load."""

    def __init__(self, broker: Broker, ledger: Ledger, queue: str, tag: str,
                 fresh_every: int = 0, delayed: bool = False):
        super().__init__(f"amqp-{queue}-{tag}")
        self.broker, self.ledger, self.queue, self.tag = broker, ledger, queue, tag
        self.fresh_every, self.delayed = fresh_every, delayed

    def run(self) -> None:
        try:
            conn = amqp_connect(self.broker)
            ch = conn.channel()
            ch.confirm_delivery()
            queue, n = self.queue, 0
            rng = random.Random(self.tag)
            while not self.stop_flag.is_set():
                if self.fresh_every and n % self.fresh_every == 0:
                    queue = f"pc.fresh.{self.tag}.{n // self.fresh_every}"
                    ch.queue_declare(queue, durable=True)
                    self.ledger.declared_queues.add(queue)
                body = f"{self.tag}:{queue}:{n}".encode()
                n += 1
                if self.delayed:
                    props = pika.BasicProperties(
                        delivery_mode=2, headers={"x-delay": rng.randint(200, 2500)})
                    self.ledger.attempt(DELAYED_Q, body)
                    ch.basic_publish(DELAYED_X, "d", body, props)
                    self.ledger.confirm(DELAYED_Q, body)
                else:
                    self.ledger.attempt(queue, body)
                    ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
                    self.ledger.confirm(queue, body)
                self.first_ack.set()
        except BaseException as e:  # the cut and the kill end every publisher
            self.error = e


class AmqpConsumer(Worker):
    """Consumes CONSUMED_QUEUE with manual acks (so the log's ack files are written too)."""

    def __init__(self, broker: Broker, ledger: Ledger):
        super().__init__("amqp-consumer")
        self.broker, self.ledger = broker, ledger

    def run(self) -> None:
        try:
            conn = amqp_connect(self.broker)
            ch = conn.channel()
            ch.basic_qos(prefetch_count=50)
            for method, _props, body in ch.consume(CONSUMED_QUEUE, inactivity_timeout=0.1):
                if self.stop_flag.is_set():
                    break
                if method is None:
                    continue
                ch.basic_ack(method.delivery_tag)
                with self.ledger.lock:
                    self.ledger.acked_by_consumer.add(body)
        except BaseException as e:
            self.error = e


class KafkaProducer(Worker):
    """acks=all records, idempotent or not; a record is in the ledger with the
    (partition, offset) its delivery report gave."""

    def __init__(self, broker: Broker, ledger: Ledger, topic: str, idempotent: bool, tag: str):
        super().__init__(f"kafka-{topic}-{tag}")
        self.broker, self.ledger, self.topic, self.tag = broker, ledger, topic, tag
        self.producer = Producer({
            "bootstrap.servers": broker.kafka_bootstrap, "acks": "all",
            "enable.idempotence": idempotent, "linger.ms": 2,
            "message.timeout.ms": 30000, "socket.timeout.ms": 10000,
            "reconnect.backoff.max.ms": 200,
            # The broker is killed under it: no connection-refused noise afterwards.
            "log_level": 0})
        self.delivered = 0

    def on_delivery(self, err, msg) -> None:
        if err is not None:
            return
        with self.ledger.lock:
            self.ledger.records[(msg.topic(), msg.partition(), msg.offset())] = msg.value()
            self.ledger.topics.add(msg.topic())
        self.delivered += 1
        self.first_ack.set()

    def run(self) -> None:
        n = 0
        try:
            while not self.stop_flag.is_set():
                if n - self.delivered > 5000:
                    self.producer.poll(0.01)
                    continue
                try:
                    self.producer.produce(self.topic, value=f"{self.tag}:{n}".encode(),
                                          key=str(n % 7).encode(), on_delivery=self.on_delivery)
                    n += 1
                except BufferError:
                    self.producer.poll(0.05)
                self.producer.poll(0)
        except BaseException as e:
            self.error = e

    def finish(self) -> None:
        """Collects the delivery reports that arrived; the broker is dead by now."""
        self.producer.flush(1)
        self.producer.poll(0)


class Load:
    """Every client at once, tagged `tag` (distinct per phase)."""

    def __init__(self, broker: Broker, ledger: Ledger, tag: str):
        self.kafka = [KafkaProducer(broker, ledger, TOPIC, True, f"{tag}-idem"),
                      KafkaProducer(broker, ledger, AUTO_TOPIC, False, f"{tag}-plain")]
        self.amqp = [AmqpPublisher(broker, ledger, q, f"{tag}-{q}") for q in QUEUES]
        self.amqp.append(AmqpPublisher(broker, ledger, "", f"{tag}-fresh", fresh_every=40))
        self.amqp.append(AmqpPublisher(broker, ledger, DELAYED_Q, f"{tag}-delay", delayed=True))
        self.consumer = AmqpConsumer(broker, ledger)
        self.workers: list[Worker] = [*self.kafka, *self.amqp, self.consumer]

    def start(self) -> "Load":
        for w in self.workers:
            w.start()
        return self

    def wait_first_acks(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for w in [*self.kafka, *self.amqp]:
            if not w.first_ack.wait(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"{w.name} got no ack in {timeout}s (error: {w.error!r})")

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join(15)
        for k in self.kafka:
            k.finish()


def cut_under_load(fs: PowercutFs, broker: Broker, load: Load, into: Path,
                   grace: float = 1.0) -> dict[str, str]:
    """Cuts the power with the load running, lets the broker run on the frozen disk for
    `grace` seconds (a confirm it sends then must still be backed by an fsync that
    completed before the cut), kills it, stops the clients."""
    report = fs.cut(into)
    time.sleep(grace)
    broker.kill9()
    load.stop()
    return report


# ---------------------------------------------------------------- the check
def read_queue(broker: Broker, queue: str, want: set[bytes], timeout: float) -> set[bytes] | None:
    """Every body in `queue` (delivered, never acked), waiting up to `timeout` for `want`
    (delayed messages are released after the restart); None if the queue does not exist."""
    conn = amqp_connect(broker)
    try:
        ch = conn.channel()
        try:
            ch.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return None
        got: set[bytes] = set()
        deadline = time.monotonic() + timeout
        # Not acked: closing the connection requeues them, so a later check sees them again.
        for method, _props, body in ch.consume(queue, inactivity_timeout=0.3):
            if method is not None:
                got.add(body)
            elif want <= got or time.monotonic() > deadline:
                break
        return got
    finally:
        conn.close()


def read_topic(broker: Broker, topic: str) -> dict[tuple[int, int], bytes] | None:
    """Every record of `topic` by (partition, offset); None if the topic does not exist."""
    c = Consumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": "pc-check",
                  "enable.auto.commit": False, "allow.auto.create.topics": False})
    try:
        md = c.list_topics(topic, timeout=15).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            return None
        out: dict[tuple[int, int], bytes] = {}
        for p in md.partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            if hi <= lo:
                continue
            c.assign([TopicPartition(topic, p, lo)])
            while True:
                m = c.poll(5)
                if m is None:
                    raise AssertionError(f"{topic}[{p}]: no record before the high watermark {hi}")
                if m.error():
                    raise KafkaException(m.error())
                out[(p, m.offset())] = m.value()
                if m.offset() >= hi - 1:
                    break
        return out
    finally:
        c.close()


def check(broker: Broker, ledger: Ledger, delayed_wait: float = 8.0) -> list[str]:
    """What the restarted broker lost of what the clients were told; empty if nothing."""
    problems: list[str] = []
    for q in sorted(ledger.declared_queues | set(ledger.confirmed)):
        want = ledger.confirmed.get(q, set())
        if q == CONSUMED_QUEUE:
            want = want - ledger.acked_by_consumer
        got = read_queue(broker, q, want, delayed_wait if q == DELAYED_Q else 2.0)
        if got is None:
            problems.append(f"queue {q}: declared (declare-ok) but gone after the cut")
            continue
        missing = want - got
        if missing:
            problems.append(f"queue {q}: {len(missing)} of {len(want)} confirmed messages lost, "
                            f"e.g. {sorted(missing)[:3]}")
        never = got - ledger.published.get(q, set())
        if never:
            problems.append(f"queue {q}: {len(never)} messages never published, e.g. {sorted(never)[:3]}")
    for topic in sorted(ledger.topics):
        got = read_topic(broker, topic)
        acked = {(p, o): v for (t, p, o), v in ledger.records.items() if t == topic}
        if got is None:
            problems.append(f"topic {topic}: created or written to, but gone after the cut "
                            f"({len(acked)} acknowledged records)")
            continue
        lost = [k for k in acked if k not in got]
        wrong = [k for k in acked if k in got and got[k] != acked[k]]
        if lost or wrong:
            problems.append(f"topic {topic}: {len(lost)} of {len(acked)} acknowledged records lost, "
                            f"{len(wrong)} at their offset with another value, "
                            f"e.g. {sorted(lost)[:3]} {sorted(wrong)[:3]}")
    return problems
