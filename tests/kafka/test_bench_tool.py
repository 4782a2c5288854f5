"""`ferrymq bench kafka` against the broker, its output checked by a real client: the
records it says it produced are in the topic, with the partitioning it was asked for."""

from __future__ import annotations

import json
import subprocess

import pytest

import kafka_helpers as kh
from ferrybroker import broker_binary
from ferrymq_murmur import murmur2, partition_for_key


@pytest.mark.parametrize("codec,keys", [("none", "none"), ("zstd", "sequential")])
def test_bench_kafka_both_modes(bootstrap, uniq, codec, keys):
    binary = broker_binary()
    if not binary.exists():
        pytest.skip(f"no ferrymq binary at {binary} to run `bench kafka` with")
    t = uniq("bench")
    r = subprocess.run([str(binary), "bench", "kafka", "--bootstrap", bootstrap, "-t", t,
                        "--mode", "both", "-n", "20000", "-s", "64", "-p", "3",
                        "--compression", codec, "--keys", keys, "--json"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    summary = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert summary["records_produced"] == 20000
    assert summary["records_failed"] == 0
    assert summary["records_consumed"] == 20000
    got = kh.consume_to_end(bootstrap, t)
    assert len(got) == 20000
    assert {r.partition for r in got} == {0, 1, 2}
    assert all(len(r.value) == 64 for r in got)
    if keys == "sequential":
        for r in got[:500]:
            assert r.partition == partition_for_key(r.key, 3), r.key


def test_murmur2_matches_java():
    """The checker above is itself checked against Kafka's vectors."""
    # Kafka's UtilsTest.testMurmur2 vectors (signed ints there).
    for data, want in [(b"21", -973932308), (b"foobar", -790332482),
                       (b"a-little-bit-long-string", -985981536), (b"abc", 479470107)]:
        assert murmur2(data) == want & 0xFFFFFFFF
