"""Declares N queues in one broker and times the management plane against them: a paged
/api/queues page of 500, the full /api/queues list, /metrics/per-object and
/api/overview (best and median of REPEAT), plus the broker's resident memory before and
after (and, for FerryMQ, after a statistics sample). Prints one JSON object.

Used by bench/mgmt-10k-queues.sh for FerryMQ and RabbitMQ alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import pika
import requests


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def timed(url: str, auth, repeat: int) -> dict:
    times, size, status = [], 0, 0
    for _ in range(repeat):
        t = time.perf_counter()
        r = requests.get(url, auth=auth, timeout=300)
        times.append(time.perf_counter() - t)
        size, status = len(r.content), r.status_code
    return {"best_ms": round(min(times) * 1000, 1),
            "median_ms": round(statistics.median(times) * 1000, 1),
            "bytes": size, "status": status}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--amqp", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--queues", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--settle", type=float, default=12.0,
                    help="seconds to wait after declaring (stats emission / sampling)")
    a = ap.parse_args()
    auth = ("guest", "guest")
    out = {"queues": a.queues}
    time.sleep(2)
    out["rss_before"] = rss(a.pid)
    conn = pika.BlockingConnection(pika.URLParameters(a.amqp))
    ch = conn.channel()
    t = time.perf_counter()
    for i in range(a.queues):
        ch.queue_declare(f"perf.{i:05d}", durable=False)
    out["declare_s"] = round(time.perf_counter() - t, 2)
    conn.close()
    out["rss_declared"] = rss(a.pid)
    time.sleep(a.settle)
    out["rss_settled"] = rss(a.pid)
    # Queue counts are where the API shows them (RabbitMQ lags a few seconds).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = requests.get(a.http + "/api/overview", auth=auth, timeout=60).json()
        if r.get("object_totals", {}).get("queues") == a.queues:
            break
        time.sleep(1)
    out["paged_500"] = timed(a.http + "/api/queues?page=1&page_size=500", auth, a.repeat)
    out["paged_500_filtered_sorted"] = timed(
        a.http + "/api/queues/%2F?page=2&page_size=500&name=perf.0&sort=messages", auth,
        a.repeat)
    out["full_list"] = timed(a.http + "/api/queues", auth, a.repeat)
    out["per_object"] = timed(a.prometheus + "/metrics/per-object", None, a.repeat)
    out["aggregated"] = timed(a.prometheus + "/metrics", None, a.repeat)
    out["overview"] = timed(a.http + "/api/overview", auth, a.repeat)
    out["rss_after"] = rss(a.pid)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
