"""Takes the screenshots of the web UI in docs/screenshots/ (PNG): starts a FerryMQ with
some traffic (pika publishers and a consumer, a Kafka topic and a lagging consumer
group), lets the rate charts collect samples, then photographs the main pages in
headless Chromium.

    FERRYMQ_BIN=target/release/ferrymq .venv/bin/python tests/ui/screenshots.py [--warmup 40]
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from pathlib import Path

import pika
import requests
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here))

from conftest import Broker, Ui, chrome, q  # noqa: E402

OUT = here.parents[1] / "docs" / "screenshots"


def traffic(broker, stop: threading.Event):
    """A publisher at a few hundred msg/s into orders.*, a consumer draining half of it."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    cons = pika.BlockingConnection(pika.URLParameters(broker.url))
    cch = cons.channel()
    cch.basic_qos(prefetch_count=50)
    cch.basic_consume("orders.eu", lambda c, m, p, b: c.basic_ack(m.delivery_tag))
    i = 0
    while not stop.is_set():
        for rk in ("orders.eu", "orders.us", "emails"):
            ch.basic_publish("", rk, b'{"order": %d}' % i,
                             pika.BasicProperties(content_type="application/json", delivery_mode=2))
        i += 1
        cons.process_data_events(time_limit=0)
        if i % 20 == 0:
            time.sleep(0.05)
    conn.close()
    cons.close()


def commit(offset):
    from kafka.structs import OffsetAndMetadata
    try:
        return OffsetAndMetadata(offset, "", -1)
    except TypeError:
        return OffsetAndMetadata(offset, "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--warmup", type=float, default=40, help="seconds of traffic before the shots")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    broker = Broker(http=True, kafka=True)
    broker.start()
    stop = threading.Event()
    driver = None
    try:
        s = requests.Session()
        s.auth = ("guest", "guest")
        base = broker.http_url
        for name in ("orders.eu", "orders.us", "emails", "reports"):
            s.put(f"{base}/api/queues/%2F/{q(name)}", json={"durable": True}).raise_for_status()
        for i in range(300):
            s.put(f"{base}/api/queues/%2F/{q(f'tenant-{i:03d}.events')}", json={"durable": True})
        s.put(f"{base}/api/exchanges/%2F/orders", json={"type": "topic", "durable": True}).raise_for_status()
        s.post(f"{base}/api/bindings/%2F/e/orders/q/orders.eu", json={"routing_key": "eu.#"})
        s.put(f"{base}/api/vhosts/staging", json={"description": "pre-production"})
        s.put(f"{base}/api/users/ops", json={"password": "ops", "tags": ["monitoring"]})
        s.put(f"{base}/api/permissions/%2F/ops", json={"configure": "", "write": "", "read": ".*"})
        s.put(f"{base}/api/policies/%2F/orders-limit",
              json={"pattern": "^orders\\.", "definition": {"max-length": 100000}, "apply-to": "queues"})
        s.put(f"{base}/api/kafka/topics/%2F/clicks", json={"partitions": 3, "configs": {"retention.ms": "86400000"}})
        prod = KafkaProducer(bootstrap_servers=broker.kafka_bootstrap, linger_ms=5)
        for i in range(3000):
            prod.send("clicks", b'{"click": %d}' % i, key=b"user-%d" % (i % 17))
        prod.flush()
        cons = KafkaConsumer(bootstrap_servers=broker.kafka_bootstrap, group_id="analytics",
                             client_id="analytics-1", enable_auto_commit=False, auto_offset_reset="earliest")
        cons.subscribe(["clicks"])
        seen, deadline = 0, time.monotonic() + 30
        while seen < 3000 and time.monotonic() < deadline:
            seen += sum(len(r) for r in cons.poll(timeout_ms=500).values())
        t = threading.Thread(target=traffic, args=(broker, stop), daemon=True)
        t.start()
        # The group falls behind while the producer goes on: its lag swings up and down.
        tps = [TopicPartition("clicks", p) for p in range(3)]
        end = time.monotonic() + args.warmup
        driver = chrome(1400, 1000)
        ui = Ui(driver, base)
        ui.logged_in()
        ui.go("/groups")  # the groups page samples lag for the chart while traffic runs
        step = 0
        while time.monotonic() < end:
            for i in range(200):
                prod.send("clicks", b'{"click": 0}', partition=i % 3)
            prod.flush()
            ends = cons.end_offsets(tps)
            step += 1
            lag = 60 + int(300 * abs(math.sin(step / 8)))
            cons.commit({tp: commit(max(0, ends[tp] - lag - 25 * tp.partition)) for tp in tps})
            cons.poll(timeout_ms=100)
            time.sleep(1.0)
        ui.go("/group/%2F/analytics")
        time.sleep(1)
        for _ in range(3):  # a few more lag samples on the group page itself
            for i in range(150):
                prod.send("clicks", b'{"click": 0}', partition=i % 3)
            prod.flush()
            cons.poll(timeout_ms=100)
            time.sleep(5)
        shots = [
            ("group", "/group/%2F/analytics", "#g-chart svg"),
            ("overview", "/", "#ov-rates svg"),
            ("queues", "/queues", "#list-queues tbody tr td a"),
            ("queue", "/queue/%2F/orders.us", "#q-chart svg"),
            ("topics", "/topics", "#list-topics tbody tr td a"),
            ("topic", "/topic/%2F/clicks", "#t-body table"),
            ("connections", "/connections", "#list-connections tbody tr td a"),
            ("exchange", "/exchange/%2F/orders", "#x-src table"),
            ("admin", "/admin/users", "#a-list table"),
            ("policies", "/admin/policies", "#a-list table"),
        ]
        for name, path, ready in shots:
            if name != "group":
                ui.go(path)
            ui.el(ready, timeout=20)
            time.sleep(0.8)
            # The whole page, not just the window.
            h = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1400, max(800, min(h + 20, 2400)))
            time.sleep(0.3)
            driver.save_screenshot(str(OUT / f"{name}.png"))
            driver.set_window_size(1400, 1000)
            print("saved", OUT / f"{name}.png")
        cons.close()
        prod.close()
    finally:
        stop.set()
        if driver is not None:
            driver.quit()
        broker.cleanup()


if __name__ == "__main__":
    main()
