"""Kafka client helpers for the security suite: client configurations for a user
(SASL_PLAINTEXT, SASL_SSL, SSL with or without a client certificate), and produce /
read / consume helpers that report authorization errors instead of hiding them."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT = 15.0


def conf(bootstrap: str, user: str | None = None, password: str | None = None,
         mechanism: str = "SCRAM-SHA-256", ca: str | None = None, cert=None) -> dict:
    """librdkafka configuration: SASL when `user` is given, TLS when `ca` is given
    (SASL_SSL or SSL), a client certificate with `cert` (a pki.Issued)."""
    c: dict = {"bootstrap.servers": bootstrap}
    if user is not None:
        c.update({"security.protocol": "sasl_ssl" if ca else "sasl_plaintext",
                  "sasl.mechanism": mechanism, "sasl.username": user,
                  "sasl.password": password or ""})
    elif ca is not None:
        c["security.protocol"] = "ssl"
    if ca is not None:
        c["ssl.ca.location"] = str(ca)
    if cert is not None:
        c["ssl.certificate.location"] = str(cert.cert)
        c["ssl.key.location"] = str(cert.key)
    return c


def uniq(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def admin(c: dict) -> AdminClient:
    return AdminClient({**c, "allow.auto.create.topics": False})


def topic_names(c: dict) -> set[str]:
    """All-topics Metadata as `c` sees it."""
    return set(admin(c).list_topics(timeout=TIMEOUT).topics)


def topic_error(c: dict, topic: str):
    """The error Metadata reports for one named topic (None when it is fine)."""
    md = admin(c).list_topics(topic=topic, timeout=TIMEOUT)
    t = md.topics.get(topic)
    return None if t is None else t.error


def create_topic(c: dict, name: str, partitions: int = 1) -> None:
    a = admin(c)  # keep the handle alive until the future resolves
    fut = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                          operation_timeout=TIMEOUT)
    fut[name].result(TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        t = a.list_topics(topic=name, timeout=TIMEOUT).topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            return
        time.sleep(0.05)
    raise AssertionError(f"topic {name} did not show up in Metadata")


def create_topic_error(c: dict, name: str) -> KafkaError | None:
    a = admin(c)
    fut = a.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)],
                          operation_timeout=TIMEOUT)
    try:
        fut[name].result(TIMEOUT)
        return None
    except KafkaException as e:
        return e.args[0]


def delete_topic_error(c: dict, name: str) -> KafkaError | None:
    a = admin(c)
    fut = a.delete_topics([name], operation_timeout=TIMEOUT)
    try:
        fut[name].result(TIMEOUT)
        return None
    except KafkaException as e:
        return e.args[0]


class Collected:
    def __init__(self):
        self.errors: list[KafkaError] = []

    def __call__(self, err):
        self.errors.append(err)

    def codes(self) -> set[int]:
        return {e.code() for e in self.errors}


def produce(c: dict, topic: str, values, timeout: float = TIMEOUT):
    """Produce and wait for every delivery report. Returns (delivered, errors, client
    errors): delivered as (partition, offset, value), errors as KafkaError."""
    client_errors = Collected()
    p = Producer({**c, "message.timeout.ms": int(timeout * 1000), "linger.ms": 5,
                  "error_cb": client_errors})
    delivered, errors = [], []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset(), msg.value()))
    for v in values:
        p.produce(topic, value=v, on_delivery=on_delivery)
        p.poll(0)
    p.flush(timeout + 5)
    return delivered, errors, client_errors.errors


def produce_ok(c: dict, topic: str, values) -> list:
    delivered, errors, client_errors = produce(c, topic, values)
    assert not errors, f"delivery failed: {errors[:3]} (client errors {client_errors[:3]})"
    assert len(delivered) == len(values)
    return delivered


def read_all(c: dict, topic: str, expect: int, group: str | None = None,
             timeout: float = TIMEOUT) -> list[bytes]:
    """Read partition 0.. of `topic` from the beginning (assign, no subscription) until
    `expect` records arrived; raise on any error other than end-of-partition."""
    errs = Collected()
    cons = Consumer({**c, "group.id": group or uniq("sec.read."), "enable.auto.commit": False,
                     "enable.partition.eof": True, "error_cb": errs})
    try:
        md = cons.list_topics(topic=topic, timeout=TIMEOUT).topics[topic]
        assert md.error is None, f"metadata error for {topic}: {md.error}"
        cons.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            m = cons.poll(0.2)
            if m is None:
                continue
            if m.error():
                # End of partition, and the group coordinator refusing a group this
                # reader has no use for (it only assigns partitions), are not failures.
                if m.error().code() in (KafkaError._PARTITION_EOF,
                                        KafkaError.GROUP_AUTHORIZATION_FAILED):
                    continue
                raise AssertionError(f"consumer error: {m.error()}")
            out.append(m.value())
        assert len(out) >= expect, f"read {len(out)} of {expect} records from {topic}"
        return out
    finally:
        cons.close()


def group_consume(c: dict, topic: str, group: str, seconds: float = TIMEOUT,
                  stop_after: int | None = None):
    """Subscribe in `group` and poll for up to `seconds`: returns (values, error codes)
    from poll() and the error callback. Stops early on an error or after `stop_after`
    records."""
    errs = Collected()
    cons = Consumer({**c, "group.id": group, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "error_cb": errs,
                     "session.timeout.ms": 6000})
    values, codes = [], set()
    try:
        cons.subscribe([topic])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            m = cons.poll(0.2)
            codes |= errs.codes()
            if m is not None:
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        codes.add(m.error().code())
                else:
                    values.append(m.value())
            if codes - {KafkaError._PARTITION_EOF}:
                break
            if stop_after is not None and len(values) >= stop_after:
                cons.commit(asynchronous=False)
                break
        return values, codes
    finally:
        cons.close()


def auth_failure(c: dict, seconds: float = TIMEOUT, until=None) -> set[int]:
    """Try to use the client and collect error codes until one of `until` (default: an
    authentication error) shows up or `seconds` pass. Returns every code seen; the caller
    checks it. Also asserts that nothing was delivered."""
    until = set(until or {KafkaError._AUTHENTICATION})
    errs = Collected()
    p = Producer({**c, "message.timeout.ms": int(seconds * 1000), "error_cb": errs,
                  "retry.backoff.ms": 200, "reconnect.backoff.ms": 200})
    delivered = []
    p.produce("sec.auth.probe", value=b"x",
              on_delivery=lambda err, msg: delivered.append(err))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until & errs.codes()):
        p.poll(0.2)
    p.purge()
    p.flush(1)
    assert not [d for d in delivered if d is None], "a record was delivered"
    return errs.codes()
