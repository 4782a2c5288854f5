"""cleanup.policy=compact: only the latest record per key is kept, tombstones hide older
values and go after delete.retention.ms, a pass runs only when min.cleanable.dirty.ratio
is reached (or when the first dirty record is older than max.compaction.lag.ms), never
over segments younger than min.compaction.lag.ms, with an offset map bounded by
--kafka-cleaner-dedupe-buffer-bytes (a full map: the next pass goes on), aborted transactions' records are dropped (never supersede committed ones),
and a pass runs off the partition's produce path (a produce during a pass is answered
at once)."""

from __future__ import annotations

import re
import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)

import kafka_helpers as kh
from test_kcat import KCAT, kcat

MiB = 1024 * 1024


@pytest.mark.timeout(240)
def test_compaction_keeps_latest_value_per_key(private_broker, uniq):
    b = private_broker()
    t = uniq("cmp")
    kh.create_topic(b.kafka_bootstrap, t, 1, {
        "cleanup.policy": "compact", "segment.bytes": MiB,
        "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": 3_600_000})
    keys = [f"key-{i:03d}".encode() for i in range(50)]
    rounds = 40
    recs = [(k, f"{k.decode()}=v{r}".encode() + b"." * 500) for r in range(rounds) for k in keys]
    tombstoned = keys[:5]
    recs += [(k, None) for k in tombstoned]
    # Distinct filler keys push every record above out of the active segment, which
    # compaction never touches.
    recs += [(f"filler-{i:06d}".encode(), b"." * 1000) for i in range(3000)]
    kh.produce(b.kafka_bootstrap, t, recs, **{"linger.ms": 20})
    total = len(recs)
    latest = {k: f"{k.decode()}=v{rounds - 1}".encode() + b"." * 500 for k in keys}
    for k in tombstoned:
        latest[k] = None

    def compacted():
        got = kh.consume_to_end(b.kafka_bootstrap, t, timeout=60)
        ours = [r for r in got if not r.key.startswith(b"filler-")]
        return (len(ours) <= len(keys)) and got

    got = kh.wait_for(compacted, 200, interval=1.0, what="compaction of the 50 keys")
    ours = [r for r in got if not r.key.startswith(b"filler-")]
    seen: dict[bytes, bytes | None] = {}
    for r in ours:
        assert r.key not in seen, f"key {r.key!r} still has two records"
        seen[r.key] = r.value
    # Every live key reads as its latest value; a tombstoned key reads as the
    # tombstone (kept for delete.retention.ms) and never as an older value.
    for k in keys:
        if k in tombstoned:
            assert seen.get(k) is None
        else:
            assert seen[k] == latest[k], k
    # Offsets are kept (compaction leaves gaps) and filler records are all there.
    assert kh.watermarks(b.kafka_bootstrap, t)[0][1] == total
    assert sum(1 for r in got if r.key.startswith(b"filler-")) == 3000
    offs = [r.offset for r in got]
    assert offs == sorted(offs)


def filler(n: int, size: int = 1000, tag: str = "f") -> list[tuple[bytes, bytes]]:
    """Distinct keys: they push the records before them out of the active segment."""
    return [(f"{tag}-{time.monotonic_ns()}-{i:06d}".encode(), b"." * size) for i in range(n)]


def fill(b, topic: str, n: int = 40, tag: str = "f") -> None:
    """Seals the segments before (small batches: a batch must fit a segment)."""
    kh.produce(b.kafka_bootstrap, topic, filler(n, tag=tag), partition=0,
               **{"batch.size": 2500})


def log_lines(b, topic: str, what: str) -> list[str]:
    text = b.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if what in line and f"/{topic}/" in line]


def plain(line: str) -> str:
    """A log line without its colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", line)


def values_of(b, topic: str, key: bytes, **conf) -> list[bytes | None]:
    return [r.value for r in kh.consume_to_end(b.kafka_bootstrap, topic, timeout=60, **conf)
            if r.key == key]


def set_config(b, topic: str, name: str, value: str) -> None:
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
    a = kh.admin(b.kafka_bootstrap)
    for f in a.incremental_alter_configs([res]).values():
        f.result(30)


def describe(b, topic: str) -> dict[str, str]:
    res = ConfigResource(ResourceType.TOPIC, topic)
    a = kh.admin(b.kafka_bootstrap)
    got = a.describe_configs([res])[res].result(30)
    return {k: v.value for k, v in got.items()}


@pytest.mark.timeout(120)
def test_compaction_configs_are_validated_and_described(private_broker, uniq):
    b = private_broker()
    t = uniq("cmpcfg")
    kh.create_topic(b.kafka_bootstrap, t, 1, {
        "cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.25",
        "delete.retention.ms": "1234"})
    d = describe(b, t)
    assert d["min.cleanable.dirty.ratio"] == "0.25"
    assert d["delete.retention.ms"] == "1234"
    set_config(b, t, "min.cleanable.dirty.ratio", "0.75")
    assert describe(b, t)["min.cleanable.dirty.ratio"] == "0.75"
    for name, bad in [("min.cleanable.dirty.ratio", "1.5"), ("min.cleanable.dirty.ratio", "x"),
                      ("delete.retention.ms", "-5")]:
        with pytest.raises(KafkaException) as e:
            set_config(b, t, name, bad)
        assert e.value.args[0].name() == "INVALID_CONFIG", (name, bad)
        a = kh.admin(b.kafka_bootstrap)
        fs = a.create_topics(
            [NewTopic(uniq("cmpbad"), 1, 1, config={name: bad})])
        with pytest.raises(KafkaException) as e:
            list(fs.values())[0].result(30)
        assert e.value.args[0].name() == "INVALID_CONFIG", (name, bad)


@pytest.mark.timeout(180)
def test_aborted_record_never_supersedes_the_committed_one(private_broker, uniq):
    b = private_broker()
    t = uniq("cmptxn")
    kh.create_topic(b.kafka_bootstrap, t, 1, {
        "cleanup.policy": "compact", "segment.bytes": 4096,
        "min.cleanable.dirty.ratio": "0.01"})
    p = Producer({"bootstrap.servers": b.kafka_bootstrap, "transactional.id": uniq("txn"),
                  "linger.ms": 5})
    p.init_transactions(20)
    p.begin_transaction()
    p.produce(t, key=b"k", value=b"committed", partition=0)
    p.commit_transaction(20)
    p.begin_transaction()
    p.produce(t, key=b"k", value=b"aborted", partition=0)
    p.flush(20)
    p.abort_transaction(20)
    # Before compaction read_uncommitted sees both.
    assert values_of(b, t, b"k", **{"isolation.level": "read_uncommitted"}) == [
        b"committed", b"aborted"]
    fill(b, t)

    def compacted():
        return log_lines(b, t, "compacted") and values_of(
            b, t, b"k", **{"isolation.level": "read_uncommitted"}) == [b"committed"]

    kh.wait_for(compacted, 60, interval=0.5, what="compaction dropping the aborted record")
    assert values_of(b, t, b"k", **{"isolation.level": "read_committed"}) == [b"committed"]
    # kafka-python reads the same.
    got = [r.value for r in kh.kp_consume_to_end(b.kafka_bootstrap, t) if r.key == b"k"]
    assert got == [b"committed"]
    # And after a restart (the transaction index is rebuilt from the compacted log).
    b.stop()
    b.start(same_port=True)
    assert values_of(b, t, b"k", **{"isolation.level": "read_committed"}) == [b"committed"]
    assert values_of(b, t, b"k", **{"isolation.level": "read_uncommitted"}) == [b"committed"]


@pytest.mark.timeout(180)
def test_tombstones_go_after_delete_retention(private_broker, uniq):
    b = private_broker()
    t = uniq("cmptomb")
    retention_s = 6.0
    kh.create_topic(b.kafka_bootstrap, t, 1, {
        "cleanup.policy": "compact", "segment.bytes": 4096,
        "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": int(retention_s * 1000)})
    kh.produce(b.kafka_bootstrap, t, [(b"gone", b"v1"), (b"gone", b"v2"), (b"gone", None),
                                      (b"kept", b"v")], partition=0)
    fill(b, t)
    produced_at = time.monotonic()
    # First pass: the older values go, the tombstone stays.
    kh.wait_for(lambda: values_of(b, t, b"gone") == [None], 60, interval=0.3,
                what="first compaction pass")
    first_seen = time.monotonic()
    assert first_seen - produced_at < retention_s, "tombstone kept at first pass"
    if KCAT:
        # kcat (librdkafka 2.0.2) sees the tombstone as a null value (size -1).
        out = kcat(b.kafka_bootstrap, "-C", "-t", t, "-e", "-f", "%k %S\n")
        assert [line for line in out.splitlines() if line.startswith("gone ")] == ["gone -1"]
    # A later pass (due when the retention has run out) removes it.
    kh.wait_for(lambda: values_of(b, t, b"gone") == [], 60, interval=0.3,
                what="tombstone removed")
    assert time.monotonic() - produced_at >= retention_s - 0.5
    # kafka-python agrees; the live key is untouched; offsets never moved.
    recs = kh.kp_consume_to_end(b.kafka_bootstrap, t)
    assert [r.value for r in recs if r.key == b"kept"] == [b"v"]
    assert not [r for r in recs if r.key == b"gone"]
    assert kh.watermarks(b.kafka_bootstrap, t)[0][1] == 4 + 40
    if KCAT:
        out = kcat(b.kafka_bootstrap, "-C", "-t", t, "-e", "-f", "%k %S\n")
        assert not [line for line in out.splitlines() if line.startswith("gone ")]
        assert "kept 1" in out.splitlines()


def dirty_part_held_by_ratio(b, t: str, clean_fill: int, ratio: str, watch_s: float) -> int:
    """A compacted topic whose key `a` (=1) went through a first pass over `clean_fill`
    filler records, then `min.cleanable.dirty.ratio` raised to `ratio` and a dirty part
    (a=2, a=3, 20 fillers) that no pass touches for `watch_s` seconds. Returns how many
    passes had started by then."""
    kh.create_topic(b.kafka_bootstrap, t, 1, {
        "cleanup.policy": "compact", "segment.bytes": 4096,
        "min.cleanable.dirty.ratio": "0.01"})
    kh.produce(b.kafka_bootstrap, t, [(b"a", b"1")], partition=0)
    fill(b, t, clean_fill, "f1")
    kh.wait_for(lambda: log_lines(b, t, "compacted"), 30, interval=0.3, what="a first pass")
    set_config(b, t, "min.cleanable.dirty.ratio", ratio)
    time.sleep(1.5)
    passes = len(log_lines(b, t, "compaction pass started"))
    kh.produce(b.kafka_bootstrap, t, [(b"a", b"2"), (b"a", b"3")], partition=0)
    fill(b, t, 20, "f2")
    time.sleep(watch_s)
    assert len(log_lines(b, t, "compaction pass started")) == passes
    assert values_of(b, t, b"a") == [b"1", b"2", b"3"]
    return passes


@pytest.mark.timeout(180)
def test_dirty_ratio_decides_when_a_pass_runs(private_broker, uniq):
    b = private_broker()
    t = uniq("cmpratio")
    # Ratio 1: with a clean part, dirty / (clean + dirty) never reaches 1, no pass runs.
    passes = dirty_part_held_by_ratio(b, t, clean_fill=20, ratio="1", watch_s=5)
    # Back to a low ratio: the next tick runs a pass.
    set_config(b, t, "min.cleanable.dirty.ratio", "0.01")
    kh.wait_for(lambda: values_of(b, t, b"a") == [b"3"], 30, interval=0.3,
                what="compaction once the ratio allows it")
    assert len(log_lines(b, t, "compaction pass started")) > passes


@pytest.mark.timeout(180)
def test_produce_is_answered_while_a_pass_runs(private_broker, uniq):
    # The hook makes every pass sleep 4 s on its thread before reading: a produce that
    # waited for the pass would take that long.
    b = private_broker(env={"FERRYMQ_TEST_COMPACTION_DELAY_MS": "4000"})
    t = uniq("cmpoff")
    kh.create_topic(b.kafka_bootstrap, t, 1, {
        "cleanup.policy": "compact", "segment.bytes": 4096,
        "min.cleanable.dirty.ratio": "0.01"})
    kh.produce(b.kafka_bootstrap, t, [(b"k", b"old")] * 5, partition=0)
    fill(b, t, 20)
    kh.wait_for(lambda: log_lines(b, t, "compaction pass started"), 30, interval=0.05,
                what="a pass to start")
    p = kh.producer(b.kafka_bootstrap, **{"acks": "all", "linger.ms": 0})
    latencies = []
    deadline = time.monotonic() + 30
    try:
        while not log_lines(b, t, "compacted"):
            assert time.monotonic() < deadline, "the pass never completed"
            start = time.monotonic()
            p.produce(t, key=b"live", value=b"x", partition=0)
            assert p.flush(10) == 0
            latencies.append(time.monotonic() - start)
    finally:
        p.flush(10)
    assert len(latencies) >= 10, f"only {len(latencies)} produces during the pass"
    assert max(latencies) < 1.0, f"a produce waited for the pass: {max(latencies):.2f}s"
    kh.wait_for(lambda: values_of(b, t, b"k") == [b"old"], 30, interval=0.3,
                what="the pass's result installed")


@pytest.mark.timeout(240)
def test_kill9_during_passes_loses_nothing(private_broker, uniq):
    b = private_broker()
    t = uniq("cmpkill")
    kh.create_topic(b.kafka_bootstrap, t, 1, {
        "cleanup.policy": "compact", "segment.bytes": 4096,
        "min.cleanable.dirty.ratio": "0.01"})
    keys = [f"k{i}".encode() for i in range(10)]
    latest: dict[bytes, bytes] = {}
    produced = 0
    for rnd in range(4):
        recs = [(k, f"{k.decode()}-{rnd}".encode() + b"." * 200) for k in keys]
        kh.produce(b.kafka_bootstrap, t, recs, partition=0, **{"batch.size": 2500})
        latest.update(recs)
        fill(b, t, 20, f"r{rnd}")
        produced += len(recs) + 20
        before = len(log_lines(b, t, "compaction pass started"))
        kh.wait_for(lambda: len(log_lines(b, t, "compaction pass started")) > before, 30,
                    interval=0.01, what="a pass to start")
        time.sleep(0.02 * rnd)
        b.kill9()
        b.start(same_port=True)
        assert kh.watermarks(b.kafka_bootstrap, t)[0][1] == produced
        got = kh.consume_to_end(b.kafka_bootstrap, t, timeout=60)
        last = {r.key: r.value for r in got}
        for k in keys:
            assert last[k] == latest[k], (rnd, k)
        assert sum(1 for r in got if r.key[:1] == b"r" and b"-" in r.key) == 20 * (rnd + 1)
    # And compaction finishes after the crashes.
    kh.wait_for(lambda: sorted(r.key for r in kh.consume_to_end(b.kafka_bootstrap, t, timeout=60)
                               if r.key in latest) == sorted(keys), 60, interval=0.5,
                what="compaction after the restarts")


@pytest.mark.timeout(120)
def test_min_compaction_lag_keeps_young_segments_uncleaned(private_broker, uniq):
    b = private_broker()
    t = uniq("cmpminlag")
    lag_s = 6.0
    kh.create_topic(b.kafka_bootstrap, t, 1, {
        "cleanup.policy": "compact", "segment.bytes": 4096,
        "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": int(lag_s * 1000)})
    start = time.monotonic()
    kh.produce(b.kafka_bootstrap, t, [(b"a", b"1"), (b"a", b"2")], partition=0)
    fill(b, t)
    # Sealed and dirty, but younger than the lag: no pass starts, both values stay.
    time.sleep(2.5)
    assert time.monotonic() - start < lag_s - 1, "the machine is too slow for this check"
    assert not log_lines(b, t, "compaction pass started")
    assert values_of(b, t, b"a") == [b"1", b"2"]
    kh.wait_for(lambda: values_of(b, t, b"a") == [b"2"], 60, interval=0.3,
                what="compaction once the lag has passed")
    assert time.monotonic() - start >= lag_s - 0.5


@pytest.mark.timeout(120)
def test_max_compaction_lag_cleans_below_the_dirty_ratio(private_broker, uniq):
    b = private_broker()
    t = uniq("cmpmaxlag")
    # A clean part 2x the dirty one keeps the ratio far below 0.99: only the max lag
    # can start the next pass.
    passes = dirty_part_held_by_ratio(b, t, clean_fill=40, ratio="0.99", watch_s=3)
    set_config(b, t, "max.compaction.lag.ms", "2000")
    kh.wait_for(lambda: values_of(b, t, b"a") == [b"3"], 30, interval=0.3,
                what="compaction forced by max.compaction.lag.ms")
    started = log_lines(b, t, "compaction pass started")[passes:]
    assert any("by_max_lag=true" in plain(line) for line in started), started
    with pytest.raises(KafkaException) as e:
        set_config(b, t, "max.compaction.lag.ms", "0")
    assert e.value.args[0].name() == "INVALID_CONFIG"


@pytest.mark.timeout(180)
def test_a_tiny_offset_map_compacts_in_several_passes(private_broker, uniq):
    # 100 slots of 24 bytes: a pass maps 90 keys at most.
    b = private_broker(extra_args=["--kafka-cleaner-dedupe-buffer-bytes", "2400"])
    t = uniq("cmpmap")
    kh.create_topic(b.kafka_bootstrap, t, 1, {
        "cleanup.policy": "compact", "segment.bytes": 4096,
        "min.cleanable.dirty.ratio": "0.01"})
    keys = [f"k{i:04d}".encode() for i in range(300)]
    for rnd in range(2):
        kh.produce(b.kafka_bootstrap, t, [(k, f"{k.decode()}-{rnd}".encode()) for k in keys],
                   partition=0, **{"batch.size": 1200})
    fill(b, t)
    total = 600 + 40

    def compacted():
        got = [r for r in kh.consume_to_end(b.kafka_bootstrap, t, timeout=60)
               if r.key in set(keys)]
        return len(got) == len(keys) and got

    got = kh.wait_for(compacted, 120, interval=0.5, what="compaction of 300 keys")
    assert {r.key: r.value for r in got} == {k: f"{k.decode()}-1".encode() for k in keys}
    full = [line for line in log_lines(b, t, "compacted") if "map_full=true" in plain(line)]
    assert len(full) >= 2, "600 keyed records need several passes of 90 keys"
    assert kh.watermarks(b.kafka_bootstrap, t)[0][1] == total
    # kafka-python reads the same.
    kp = {r.key: r.value for r in kh.kp_consume_to_end(b.kafka_bootstrap, t) if r.key in set(keys)}
    assert kp == {k: f"{k.decode()}-1".encode() for k in keys}


@pytest.mark.timeout(180)
def test_commit_markers_go_once_their_records_are_gone(private_broker, uniq):
    b = private_broker()
    t = uniq("cmpmark")
    kh.create_topic(b.kafka_bootstrap, t, 1, {
        "cleanup.policy": "compact", "segment.bytes": 4096,
        "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": 1000})
    p = Producer({"bootstrap.servers": b.kafka_bootstrap, "transactional.id": uniq("txn"),
                  "linger.ms": 5})
    p.init_transactions(20)
    for v in (b"v1", b"v2", b"v3"):
        p.begin_transaction()
        p.produce(t, key=b"k", value=v, partition=0)
        p.commit_transaction(20)
    fill(b, t)
    # v1's and v2's transactions lose their records; their COMMIT markers go after
    # delete.retention.ms; v3's marker is the producer's last and stays.
    kh.wait_for(lambda: sum(int(m) for line in log_lines(b, t, "compacted")
                            for m in re.findall(r"markers_removed=(\d+)", plain(line))) >= 2,
                60, interval=0.3, what="two COMMIT markers removed")
    end = 3 + 3 + 40

    def check():
        for level in ("read_committed", "read_uncommitted"):
            recs = kh.consume_to_end(b.kafka_bootstrap, t, timeout=60,
                                     **{"isolation.level": level})
            assert [r.value for r in recs if r.key == b"k"] == [b"v3"], level
            assert len(recs) == 1 + 40, level
        kp = kh.kp_consume_to_end(b.kafka_bootstrap, t)
        assert [r.value for r in kp if r.key == b"k"] == [b"v3"]
        assert kh.watermarks(b.kafka_bootstrap, t)[0][1] == end

    check()
    # After a restart the transaction index is rebuilt from the compacted log: no
    # transaction is left open (read_committed readers still reach the end), and the
    # producer goes on.
    b.stop()
    b.start(same_port=True)
    check()
    p2 = Producer({"bootstrap.servers": b.kafka_bootstrap,
                   "transactional.id": uniq("txn2"), "linger.ms": 5})
    p2.init_transactions(20)
    p2.begin_transaction()
    p2.produce(t, key=b"k", value=b"v4", partition=0)
    p2.commit_transaction(20)
    got = kh.consume_to_end(b.kafka_bootstrap, t, timeout=60,
                            **{"isolation.level": "read_committed"})
    assert [r.value for r in got if r.key == b"k"] == [b"v3", b"v4"]


@pytest.mark.timeout(120)
def test_max_compaction_lag_rolls_and_cleans_the_active_segment(private_broker, uniq):
    # Kafka rolls a compacted log's active segment after max.compaction.lag.ms (less
    # than segment.ms), so a quiet topic is cleaned within the lag too.
    b = private_broker()
    t = uniq("cmproll")
    kh.create_topic(b.kafka_bootstrap, t, 1, {
        "cleanup.policy": "compact", "segment.bytes": MiB,
        "max.compaction.lag.ms": 2000})
    kh.produce(b.kafka_bootstrap, t, [(b"a", b"1"), (b"a", b"2"), (b"b", b"1")], partition=0)
    kh.wait_for(lambda: values_of(b, t, b"a") == [b"2"], 30, interval=0.3,
                what="the quiet active segment rolled and cleaned")
    assert log_lines(b, t, "segment rolled by time")
    assert values_of(b, t, b"b") == [b"1"]
    assert kh.watermarks(b.kafka_bootstrap, t)[0][1] == 3


@pytest.mark.timeout(120)
def test_partitions_share_the_one_cleaner_slot(private_broker, uniq):
    # Passes run one at a time in the broker; every partition's turn comes.
    b = private_broker(env={"FERRYMQ_TEST_COMPACTION_DELAY_MS": "300"})
    t = uniq("cmpslot")
    parts = 4
    kh.create_topic(b.kafka_bootstrap, t, parts, {
        "cleanup.policy": "compact", "segment.bytes": 4096,
        "min.cleanable.dirty.ratio": "0.01"})
    for p in range(parts):
        kh.produce(b.kafka_bootstrap, t, [(b"k", b"old"), (b"k", f"new{p}".encode())],
                   partition=p)
        kh.produce(b.kafka_bootstrap, t, filler(30, tag=f"p{p}"), partition=p,
                   **{"batch.size": 2500})

    def compacted():
        got = kh.consume_to_end(b.kafka_bootstrap, t, timeout=60)
        ks = sorted((r.partition, r.value) for r in got if r.key == b"k")
        return ks == [(p, f"new{p}".encode()) for p in range(parts)]

    kh.wait_for(compacted, 90, interval=0.5, what="every partition compacted")
