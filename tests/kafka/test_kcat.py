"""kcat (Debian's, librdkafka 2.0.2: Metadata v4, ListOffsets v2, Fetch v11) produces,
consumes to the end (-e) and lists metadata (-L, -J) against the broker."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import kafka_helpers as kh

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed "
                                "(apt-get install -y kcat; .ci/run does it)")


def kcat(bootstrap: str, *args: str, stdin: bytes | None = None, timeout: float = 30) -> str:
    # -m: metadata timeout; -X: fail fast rather than retry forever against a broken broker.
    cmd = [KCAT, "-b", bootstrap, "-m", "15", "-X", "message.timeout.ms=15000", *args]
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.decode()[-2000:]}"
    return r.stdout.decode()


def test_produce_then_consume_with_keys(bootstrap, topic):
    t = topic(partitions=1)
    lines = [f"key{i % 7}:value-{i}" for i in range(200)]
    kcat(bootstrap, "-P", "-t", t, "-K:", stdin=("\n".join(lines) + "\n").encode())
    out = kcat(bootstrap, "-C", "-t", t, "-e", "-f", "%k=%s@%p:%o\n")
    got = out.splitlines()
    assert got == [f"{line.replace(':', '=', 1)}@0:{i}" for i, line in enumerate(lines)]


def test_kcat_reads_what_confluent_wrote(bootstrap, topic):
    t = topic(partitions=3)
    recs = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(90)]
    acked = kh.produce(bootstrap, t, recs)
    out = kcat(bootstrap, "-C", "-t", t, "-e", "-f", "%p %o %k %s\n")
    got = {tuple(line.split()) for line in out.splitlines()}
    want = {(str(r.partition), str(r.offset), r.key.decode(), r.value.decode()) for r in acked}
    assert got == want


def test_confluent_reads_what_kcat_wrote(bootstrap, topic):
    t = topic(partitions=2)
    lines = [f"k{i}|v{i}" for i in range(100)]
    kcat(bootstrap, "-P", "-t", t, "-K|", stdin=("\n".join(lines) + "\n").encode())
    got = kh.consume_to_end(bootstrap, t)
    assert sorted((r.key, r.value) for r in got) == sorted(
        (f"k{i}".encode(), f"v{i}".encode()) for i in range(100))
    # librdkafka's default partitioner sends one key to one partition.
    for key, parts in _partitions_by_key(got).items():
        assert len(parts) == 1, key


def _partitions_by_key(recs):
    out = {}
    for r in recs:
        out.setdefault(r.key, set()).add(r.partition)
    return out


def test_metadata_listing(bootstrap, topic):
    t = topic(partitions=4)
    out = kcat(bootstrap, "-L", "-t", t)
    assert f'topic "{t}" with 4 partitions' in out, out
    for p in range(4):
        assert f"partition {p}, leader" in out, out

    md = json.loads(kcat(bootstrap, "-L", "-J"))
    assert md["brokers"], md
    broker_ids = {b["id"] for b in md["brokers"]}
    (entry,) = [x for x in md["topics"] if x["topic"] == t]
    assert sorted(p["partition"] for p in entry["partitions"]) == [0, 1, 2, 3]
    for p in entry["partitions"]:
        assert p["leader"] in broker_ids
    # The advertised address must be one kcat can use (it just consumed metadata
    # through the bootstrap; now a data request goes to the advertised broker).
    kcat(bootstrap, "-C", "-t", t, "-e", "-o", "beginning")


def test_produce_compressed(bootstrap, topic):
    t = topic(partitions=1)
    for codec in ["gzip", "snappy", "lz4", "zstd"]:
        kcat(bootstrap, "-P", "-t", t, "-z", codec,
             stdin=("\n".join(f"{codec}-{i}" for i in range(50)) + "\n").encode())
    out = kcat(bootstrap, "-C", "-t", t, "-e", "-f", "%s\n")
    assert out.splitlines() == [f"{c}-{i}" for c in ["gzip", "snappy", "lz4", "zstd"]
                                for i in range(50)]
