"""Client-side helpers shared by the Kafka suite: create topics, produce with delivery
reports, consume a topic to its end. They use only public client APIs, so a failure
is the broker's (or the test's), never a helper shortcut."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

# Every client in the suite is told to give up quickly, so a broken broker fails a test
# instead of hanging it until pytest-timeout.
CLIENT_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Rec:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = -1


def wait_for(pred, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    """Polls `pred` until it returns a truthy value (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


def admin(bootstrap: str, **conf) -> AdminClient:
    # librdkafka lets producer-type handles (AdminClient is one) auto-create topics with
    # their metadata requests: never, here, so checking a topic cannot create it.
    return AdminClient({"bootstrap.servers": bootstrap, "allow.auto.create.topics": False,
                        **conf})


def partitions_of(bootstrap: str, topic: str) -> int:
    """Partition count of `topic` from Metadata (0 when the broker does not know it)."""
    md = admin(bootstrap).list_topics(topic=topic, timeout=CLIENT_TIMEOUT_S)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return 0
    return len(t.partitions)


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict | None = None,
                 replication: int = 1) -> None:
    a = admin(bootstrap)
    fut = a.create_topics([NewTopic(name, num_partitions=partitions,
                                    replication_factor=replication,
                                    config={k: str(v) for k, v in (config or {}).items()})],
                          operation_timeout=CLIENT_TIMEOUT_S)
    fut[name].result(CLIENT_TIMEOUT_S)
    wait_for(lambda: partitions_of(bootstrap, name) == partitions,
             what=f"metadata to show {name} with {partitions} partitions")


def producer(bootstrap: str, **conf) -> Producer:
    base = {"bootstrap.servers": bootstrap, "message.timeout.ms": int(CLIENT_TIMEOUT_S * 1000),
            "linger.ms": 5}
    base.update(conf)
    return Producer(base)


def produce(bootstrap: str, topic: str, records, partition: int | None = None,
            **conf) -> list[Rec]:
    """Produces `records` ((key, value) pairs or plain values) and waits for every
    delivery report. Raises if any record failed; returns them with their assigned
    partition and offset, in the order the reports came."""
    p = producer(bootstrap, **conf)
    delivered: list[Rec] = []
    errors: list[KafkaError] = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append(Rec(msg.partition(), msg.offset(), msg.key(), msg.value(),
                                 msg.timestamp()[1]))

    for r in records:
        key, value = r if isinstance(r, tuple) else (None, r)
        kwargs = {"key": key, "value": value, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                p.produce(topic, **kwargs)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    remaining = p.flush(CLIENT_TIMEOUT_S)
    assert remaining == 0, f"{remaining} records still undelivered after {CLIENT_TIMEOUT_S}s"
    assert not errors, f"delivery failed: {errors[:5]}"
    return delivered


def consumer(bootstrap: str, group: str | None = None, **conf) -> Consumer:
    base = {"bootstrap.servers": bootstrap,
            "group.id": group or f"kt.reader.{time.monotonic_ns()}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "enable.partition.eof": True}
    base.update(conf)
    return Consumer(base)


def watermarks(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """{partition: (low, high)} as ListOffsets reports them."""
    c = consumer(bootstrap)
    try:
        n = partitions_of(bootstrap, topic)
        return {p: c.get_watermark_offsets(TopicPartition(topic, p),
                                           timeout=CLIENT_TIMEOUT_S, cached=False)
                for p in range(n)}
    finally:
        c.close()


def consume_to_end(bootstrap: str, topic: str, timeout: float = CLIENT_TIMEOUT_S,
                   start=OFFSET_BEGINNING, **conf) -> list[Rec]:
    """Reads every partition of `topic` from `start` to the high watermark seen when the
    read began (assign, no group membership). Raises on any consumer error or if the end
    is not reached within `timeout`."""
    marks = watermarks(bootstrap, topic)
    target = {p: hi for p, (lo, hi) in marks.items()}
    c = consumer(bootstrap, **conf)
    out: list[Rec] = []
    nxt: dict[int, int] = {}
    try:
        c.assign([TopicPartition(topic, p, start) for p in marks])
        deadline = time.monotonic() + timeout
        while any(nxt.get(p, -1) < hi for p, hi in target.items()
                  if hi > marks[p][0]):
            if time.monotonic() > deadline:
                raise AssertionError(f"consume of {topic} stuck at {nxt}, wanted {target}")
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    nxt[m.partition()] = max(nxt.get(m.partition(), -1), m.offset())
                    continue
                raise KafkaException(m.error())
            out.append(Rec(m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1]))
            nxt[m.partition()] = m.offset() + 1
        return out
    finally:
        c.close()


def by_partition(recs: list[Rec]) -> dict[int, list[Rec]]:
    out: dict[int, list[Rec]] = {}
    for r in recs:
        out.setdefault(r.partition, []).append(r)
    return out


def numbered(n: int, prefix: str = "r", size: int = 0) -> list[bytes]:
    """n distinct values `prefix-000000…`, padded to `size` bytes when given."""
    vals = []
    for i in range(n):
        v = f"{prefix}-{i:06d}".encode()
        if size > len(v):
            v = v + b"." * (size - len(v))
        vals.append(v)
    return vals


# ---------------------------------------------------------------- kafka-python

def kp_produce(bootstrap: str, topic: str, records, partition: int | None = None,
               **conf) -> list[Rec]:
    """kafka-python twin of `produce`: waits for every future, returns the metadata."""
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=int(CLIENT_TIMEOUT_S * 1000),
                      linger_ms=5, **conf)
    try:
        futs = []
        for r in records:
            key, value = r if isinstance(r, tuple) else (None, r)
            futs.append((key, value, p.send(topic, key=key, value=value, partition=partition)))
        p.flush(CLIENT_TIMEOUT_S)
        out = []
        for key, value, f in futs:
            md = f.get(CLIENT_TIMEOUT_S)
            out.append(Rec(md.partition, md.offset, key, value, md.timestamp))
        return out
    finally:
        p.close(CLIENT_TIMEOUT_S)


def kp_consume_to_end(bootstrap: str, topic: str, timeout: float = CLIENT_TIMEOUT_S,
                      **conf) -> list[Rec]:
    """kafka-python twin of `consume_to_end` (no group: assign + seek to beginning)."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest",
                      request_timeout_ms=int(CLIENT_TIMEOUT_S * 1000) + 1000, **conf)
    try:
        parts = wait_for(lambda: c.partitions_for_topic(topic), what=f"{topic} partitions")
        tps = [KTP(topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        begins = c.beginning_offsets(tps)
        out: list[Rec] = []
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < ends[tp] for tp in tps if ends[tp] > begins[tp]):
            if time.monotonic() > deadline:
                raise AssertionError(f"kafka-python consume of {topic} stuck: "
                                     f"{ {tp.partition: c.position(tp) for tp in tps} } "
                                     f"wanted { {tp.partition: ends[tp] for tp in tps} }")
            for tp, msgs in c.poll(timeout_ms=200).items():
                for m in msgs:
                    out.append(Rec(tp.partition, m.offset, m.key, m.value, m.timestamp))
        return out
    finally:
        c.close()
