"""The soak (bench/soak.py) in short: ~90 s of mixed AMQP (pika, confirms) and Kafka
(confluent-kafka, acks=all) load on durable and transient queues/topics with consumers,
three kill -9 of the broker (two during the load, one after), and the checker: no confirmed
persistent message or acknowledged record lost, RSS under the watermark + 25%. The hour-long
run is `bench/soak.sh` (figures in bench/results/2026-12-07-soak.txt)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import soak  # noqa: E402


@pytest.mark.timeout(400)
def test_short_soak_with_kill9(tmp_path):
    out = tmp_path / "summary.json"
    rc = soak.main(["--duration", "90", "--kill-every", "35", "--watermark", "300MB",
                    "--work-dir", str(tmp_path), "--summary", str(out)])
    summary = json.loads(out.read_text())
    assert summary["kills"] >= 3, summary
    assert summary["amqp_confirmed_persistent"] > 100, summary
    assert summary["kafka_acked_all"] > 100, summary
    assert summary["amqp_lost_persistent"] == 0, summary
    assert summary["kafka_lost_acked"] == 0, summary
    assert summary["rss_peak_bytes"] <= summary["rss_limit_bytes"], summary
    assert rc == 0, summary
