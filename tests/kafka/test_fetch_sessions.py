"""Fetch sessions (KIP-227, incremental fetch): kafka-python keeps a session per broker
and sends incremental fetches; the broker's counters (`ferrymq_kafka_fetch_requests_total`
on /metrics) show which kind each Fetch was. Consumers read many partitions correctly
through sessions, across subscription changes (partitions added and forgotten) and a
broker restart (sessions gone: clients get FETCH_SESSION_ID_NOT_FOUND and start over).
librdkafka does not implement fetch sessions (it always sends session id 0, epoch -1):
its fetches must stay sessionless and correct."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

import kafka_helpers as kh


def metrics(b) -> dict[str, float]:
    text = urllib.request.urlopen(b.prometheus_url + "/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^(ferrymq_kafka_fetch[a-z_]*)(\{kind="([a-z_]+)"\})? (\S+)$', line)
        if m:
            name = m.group(1) + (":" + m.group(3) if m.group(3) else "")
            out[name] = float(m.group(4))
    return out


def incremental(b) -> float:
    return metrics(b).get("ferrymq_kafka_fetch_requests_total:incremental", 0)


def polled_incremental(b, c) -> float:
    """Polls consumer `c` (kafka-python fetches only inside poll) then reads the counter."""
    assert not c.poll(timeout_ms=100)
    return incremental(b)


def kp_consumer(b, **conf):
    from kafka import KafkaConsumer

    return KafkaConsumer(bootstrap_servers=b.kafka_bootstrap, group_id=None,
                         enable_auto_commit=False, auto_offset_reset="earliest",
                         fetch_max_wait_ms=100,
                         request_timeout_ms=int(kh.CLIENT_TIMEOUT_S * 1000) + 1000, **conf)


def kp_read(c, want: dict, timeout: float = kh.CLIENT_TIMEOUT_S) -> dict:
    """Polls until, per (topic, partition), `want[tp]` values arrived; returns them."""
    got: dict = {}
    deadline = time.monotonic() + timeout
    while any(len(got.get(tp, [])) < n for tp, n in want.items()):
        assert time.monotonic() < deadline, f"stuck: { {k: len(v) for k, v in got.items()} } of {want}"
        for tp, msgs in c.poll(timeout_ms=200).items():
            got.setdefault((tp.topic, tp.partition), []).extend(m.value for m in msgs)
    return got


def produce_each(bootstrap, topic, parts: int, per: int, tag: str) -> dict:
    recs = []
    for p in range(parts):
        recs += [(p, f"{tag}-{p}-{i}".encode()) for i in range(per)]
    p = kh.producer(bootstrap)
    for part, v in recs:
        p.produce(topic, value=v, partition=part)
        p.poll(0)
    assert p.flush(kh.CLIENT_TIMEOUT_S) == 0
    return {(topic, part): [f"{tag}-{part}-{i}".encode() for i in range(per)] for part in range(parts)}


def test_kafka_python_many_partitions_incremental(private_broker, uniq):
    from kafka import TopicPartition as KTP

    b = private_broker()
    topic = uniq("sess")
    kh.create_topic(b.kafka_bootstrap, topic, partitions=64)
    want = produce_each(b.kafka_bootstrap, topic, 64, 5, "a")
    before = metrics(b)
    c = kp_consumer(b)
    try:
        c.assign([KTP(topic, p) for p in range(64)])
        got = kp_read(c, {tp: 5 for tp in want})
        assert got == want
        # Idle for a while: the session keeps going with incremental fetches.
        n0 = incremental(b)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            assert not c.poll(timeout_ms=100)
        m = metrics(b)
        assert m["ferrymq_kafka_fetch_requests_total:incremental"] > n0 + 3, m
        assert m["ferrymq_kafka_fetch_requests_total:full"] >= 1
        assert m["ferrymq_kafka_fetch_requests_total:session_error"] == before.get(
            "ferrymq_kafka_fetch_requests_total:session_error", 0)
        assert m["ferrymq_kafka_fetch_sessions"] >= 1
        assert m["ferrymq_kafka_fetch_session_partitions"] >= 64
        # New records on some partitions arrive through the incremental session.
        more = produce_each(b.kafka_bootstrap, topic, 64, 3, "b")
        got = kp_read(c, {tp: 3 for tp in more})
        assert got == more
    finally:
        c.close()


def test_kafka_python_subscription_change(private_broker, uniq):
    """Partitions added to and forgotten from the session: the consumer gets exactly the
    partitions it now wants."""
    from kafka import TopicPartition as KTP

    b = private_broker()
    t1, t2, t3 = uniq("s1"), uniq("s2"), uniq("s3")
    for t in (t1, t2, t3):
        kh.create_topic(b.kafka_bootstrap, t, partitions=4)
    c = kp_consumer(b)
    try:
        c.assign([KTP(t1, p) for p in range(4)] + [KTP(t2, p) for p in range(4)])
        w1 = produce_each(b.kafka_bootstrap, t1, 4, 2, "x")
        w2 = produce_each(b.kafka_bootstrap, t2, 4, 2, "x")
        assert kp_read(c, {tp: 2 for tp in {**w1, **w2}}) == {**w1, **w2}
        inc = incremental(b)
        # Drop t1 and t2's partitions 2-3, add t3.
        keep = [KTP(t2, 0), KTP(t2, 1)]
        c.assign(keep + [KTP(t3, p) for p in range(4)])
        for tp in keep:
            c.seek(tp, 2)
        for p in range(4):
            c.seek(KTP(t3, p), 0)
        produce_each(b.kafka_bootstrap, t1, 4, 2, "y")
        w2b = produce_each(b.kafka_bootstrap, t2, 4, 2, "y")
        w3 = produce_each(b.kafka_bootstrap, t3, 4, 2, "y")
        want = {tp: v for tp, v in w2b.items() if tp[1] < 2}
        want.update(w3)
        got = kp_read(c, {tp: 2 for tp in want})
        assert got == want
        # Nothing from the dropped partitions turns up.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            for tp, msgs in c.poll(timeout_ms=100).items():
                pytest.fail(f"unexpected records from {tp}: {len(msgs)}")
        m = metrics(b)
        assert m["ferrymq_kafka_fetch_requests_total:incremental"] > inc, m
        assert m["ferrymq_kafka_fetch_requests_total:session_error"] == 0, m
    finally:
        c.close()


def test_kafka_python_recovers_after_restart(private_broker, uniq):
    from kafka import TopicPartition as KTP

    b = private_broker()
    topic = uniq("rs")
    kh.create_topic(b.kafka_bootstrap, topic, partitions=8)
    c = kp_consumer(b, reconnect_backoff_max_ms=500)
    try:
        c.assign([KTP(topic, p) for p in range(8)])
        w = produce_each(b.kafka_bootstrap, topic, 8, 2, "pre")
        assert kp_read(c, {tp: 2 for tp in w}) == w
        kh.wait_for(lambda: polled_incremental(b, c) > 0, what="incremental fetches")
        b.stop()
        b.start(same_port=True)
        assert metrics(b).get("ferrymq_kafka_fetch_sessions", 0) <= 1
        w2 = produce_each(b.kafka_bootstrap, topic, 8, 2, "post")
        assert kp_read(c, {tp: 2 for tp in w2}, timeout=40) == w2
        kh.wait_for(lambda: polled_incremental(b, c) > 0,
                    what="incremental fetches after restart")
    finally:
        c.close()


def test_kafka_python_without_sessions_is_sessionless(private_broker, uniq):
    """The peer: kafka-python with enable_incremental_fetch_sessions=False sends epoch -1
    fetches only; nothing is cached."""
    from kafka import TopicPartition as KTP

    b = private_broker()
    topic = uniq("nosess")
    kh.create_topic(b.kafka_bootstrap, topic, partitions=8)
    w = produce_each(b.kafka_bootstrap, topic, 8, 3, "n")
    c = kp_consumer(b, enable_incremental_fetch_sessions=False)
    try:
        c.assign([KTP(topic, p) for p in range(8)])
        assert kp_read(c, {tp: 3 for tp in w}) == w
        m = metrics(b)
        assert m.get("ferrymq_kafka_fetch_requests_total:incremental", 0) == 0, m
        assert m.get("ferrymq_kafka_fetch_sessions", 0) == 0, m
        assert m["ferrymq_kafka_fetch_requests_total:sessionless"] > 0, m
    finally:
        c.close()


def test_session_cache_slots_bound(private_broker, uniq):
    """With one slot, a second consumer with more partitions evicts the first session; the
    first consumer gets FETCH_SESSION_ID_NOT_FOUND, starts over, and keeps reading."""
    from kafka import TopicPartition as KTP

    b = private_broker(extra_args=["--kafka-fetch-session-cache-slots", "1"])
    small, big = uniq("small"), uniq("big")
    kh.create_topic(b.kafka_bootstrap, small, partitions=2)
    kh.create_topic(b.kafka_bootstrap, big, partitions=6)
    c1, c2 = kp_consumer(b), kp_consumer(b)
    try:
        c1.assign([KTP(small, p) for p in range(2)])
        w = produce_each(b.kafka_bootstrap, small, 2, 2, "a")
        assert kp_read(c1, {tp: 2 for tp in w}) == w
        kh.wait_for(lambda: polled_incremental(b, c1) > 0, what="c1 incremental")
        c2.assign([KTP(big, p) for p in range(6)])
        wb = produce_each(b.kafka_bootstrap, big, 6, 2, "b")
        assert kp_read(c2, {tp: 2 for tp in wb}) == wb
        m = metrics(b)
        assert m["ferrymq_kafka_fetch_sessions_evicted_total"] >= 1, m
        assert m["ferrymq_kafka_fetch_sessions"] == 1, m
        # c1 still reads what follows (as a new session or sessionless).
        w2 = produce_each(b.kafka_bootstrap, small, 2, 2, "c")
        assert kp_read(c1, {tp: 2 for tp in w2}) == w2
        assert metrics(b)["ferrymq_kafka_fetch_requests_total:session_error"] >= 1
    finally:
        c1.close()
        c2.close()


def test_confluent_kafka_many_partitions_sessionless(private_broker, uniq):
    """librdkafka sends sessionless fetches (id 0, epoch -1): all 64 partitions read
    correctly, before and after new records, and no session is created for it."""
    b = private_broker()
    topic = uniq("rdk")
    kh.create_topic(b.kafka_bootstrap, topic, partitions=64)
    want = produce_each(b.kafka_bootstrap, topic, 64, 3, "r")
    c = kh.consumer(b.kafka_bootstrap, **{"fetch.wait.max.ms": 100})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(64)])
        got: dict = {}

        def read(want):
            deadline = time.monotonic() + kh.CLIENT_TIMEOUT_S
            while any(len(got.get(tp, [])) < len(v) for tp, v in want.items()):
                assert time.monotonic() < deadline
                m = c.poll(0.2)
                if m is None or (m.error() and m.error().code() == KafkaError._PARTITION_EOF):
                    continue
                assert not m.error(), m.error()
                got.setdefault((m.topic(), m.partition()), []).append(m.value())

        read(want)
        more = produce_each(b.kafka_bootstrap, topic, 64, 2, "s")
        read({tp: want[tp] + more[tp] for tp in want})
        assert got == {tp: want[tp] + more[tp] for tp in want}
        m = metrics(b)
        assert m["ferrymq_kafka_fetch_requests_total:sessionless"] > 0, m
        assert m.get("ferrymq_kafka_fetch_requests_total:incremental", 0) == 0, m
    finally:
        c.close()


def fetch_bytes(b) -> tuple[float, float, float]:
    """(Fetch request bytes, Fetch response bytes, Fetch requests) the broker counted."""
    text = urllib.request.urlopen(b.prometheus_url + "/metrics", timeout=10).read().decode()

    def get(name):
        m = re.search(rf'^{name}{{api="Fetch"}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0
    m = metrics(b)
    n = sum(v for k, v in m.items() if k.startswith("ferrymq_kafka_fetch_requests_total:"))
    return get("ferrymq_kafka_request_bytes_total"), get("ferrymq_kafka_response_bytes_total"), n


@pytest.mark.timeout(120)
def test_request_bytes_per_fetch_with_and_without_a_session(private_broker, uniq):
    """The broker's byte counters (per API, size prefixes included) show what sessions
    save: an idle incremental Fetch names no partition, a sessionless one names all 200."""
    from kafka import TopicPartition as KTP

    b = private_broker()
    topic = uniq("bytes")
    kh.create_topic(b.kafka_bootstrap, topic, partitions=200)
    per_fetch = {}
    for sessions in (True, False):
        c = kp_consumer(b, enable_incremental_fetch_sessions=sessions)
        try:
            c.assign([KTP(topic, p) for p in range(200)])
            end = time.monotonic() + 1.5  # warm up: offsets, the session's full fetch
            while time.monotonic() < end:
                assert not c.poll(timeout_ms=100)
            q0, r0, n0 = fetch_bytes(b)
            end = time.monotonic() + 2
            while time.monotonic() < end:
                assert not c.poll(timeout_ms=100)
            q1, r1, n1 = fetch_bytes(b)
        finally:
            c.close()
        assert n1 - n0 >= 3, (sessions, n0, n1)
        assert r1 > r0
        per_fetch[sessions] = (q1 - q0) / (n1 - n0)
    # 200 partitions take 200 x (partition, epoch, offset, log start, max bytes...) bytes.
    assert per_fetch[False] > 200 * 20, per_fetch
    assert per_fetch[True] < 200, per_fetch
