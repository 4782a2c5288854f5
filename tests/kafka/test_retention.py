"""Retention deletes whole old segments (by size and by time). Each test runs on a private
broker so the data dir's size is this topic's alone. (Compaction: pending/test_compaction.py.)"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import kafka_helpers as kh

MiB = 1024 * 1024


def dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except FileNotFoundError:
                pass
    return total


def fill(bootstrap, t, n, size=1024, key=None):
    vals = kh.numbered(n, "fill", size)
    kh.produce(bootstrap, t, [(key, v) if key else v for v in vals],
               **{"linger.ms": 20, "batch.size": 64 * 1024})
    return vals


@pytest.mark.timeout(180)
def test_retention_bytes_deletes_old_segments(private_broker, uniq):
    b = private_broker()
    t = uniq("rb")
    kh.create_topic(b.kafka_bootstrap, t, 1, {"segment.bytes": MiB,
                                              "retention.bytes": 2 * MiB})
    fill(b.kafka_bootstrap, t, 8000)  # ~8 MiB: eight segments
    # Retention runs in the background; wait for it (Kafka checks every 5 minutes by
    # default, FerryMQ much sooner).
    lo = kh.wait_for(lambda: kh.watermarks(b.kafka_bootstrap, t)[0][0] or None, 150,
                     interval=0.5, what="earliest offset to move")
    assert lo > 0
    lo, hi = kh.watermarks(b.kafka_bootstrap, t)[0]
    assert hi == 8000
    # Whole segments only: what is left is at most retention.bytes plus the active one.
    kept_bytes = (hi - lo) * 1024
    assert kept_bytes <= 3 * MiB + 64 * 1024, (lo, hi)
    assert kept_bytes >= MiB, (lo, hi)  # not everything: retention.bytes is 2 MiB
    kh.wait_for(lambda: dir_size(b.data_dir) < 5 * MiB, 30, interval=0.5,
                what=f"data dir to shrink (now {dir_size(b.data_dir)} bytes)")
    got = kh.consume_to_end(b.kafka_bootstrap, t)
    assert got[0].offset == lo and got[-1].offset == hi - 1
    assert got[0].value.startswith(f"fill-{lo:06d}".encode())


@pytest.mark.timeout(180)
def test_retention_ms_deletes_segments_of_old_records(private_broker, uniq):
    b = private_broker()
    t = uniq("rms")
    kh.create_topic(b.kafka_bootstrap, t, 1, {"segment.bytes": MiB, "retention.ms": 60000})
    # Records stamped two hours ago (CreateTime): every closed segment is past retention.
    old = int(time.time() * 1000) - 7_200_000
    p = kh.producer(b.kafka_bootstrap, **{"linger.ms": 20})
    for i in range(4000):
        p.produce(t, value=f"old-{i:06d}".encode() + b"." * 1000, timestamp=old + i)
        p.poll(0)
    assert p.flush(30) == 0
    fresh = fill(b.kafka_bootstrap, t, 200, size=100)  # new records keep the tail alive
    size_before = dir_size(b.data_dir)
    assert size_before > 3 * MiB
    lo = kh.wait_for(lambda: kh.watermarks(b.kafka_bootstrap, t)[0][0] or None, 150,
                     interval=0.5, what="earliest offset to move")
    assert 0 < lo <= 4000
    kh.wait_for(lambda: dir_size(b.data_dir) < size_before - 2 * MiB, 30, interval=0.5,
                what="data dir to shrink")
    got = kh.consume_to_end(b.kafka_bootstrap, t)
    assert [r.value for r in got[-200:]] == fresh

