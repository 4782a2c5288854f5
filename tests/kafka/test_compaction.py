"""PENDING until compaction runs (README: `cleanup.policy=compact` is stored but compaction
does not run): cleanup.policy=compact keeps only the latest record per key, tombstones
hide older values. Move up into tests/kafka/ in the commit that lands compaction."""

from __future__ import annotations

import pytest

import kafka_helpers as kh

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
