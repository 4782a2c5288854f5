"""kill -9 while publishers (with confirms) and consumers (with acks) run against a durable
queue, several cycles. After the last restart:
- every confirmed message has been delivered at least once,
- nothing was delivered that was never published,
- order holds apart from redeliveries (first deliveries arrive in publish order).

Set FERRYMQ_KILL9_CYCLES for a longer run (bench/kill9-loop.sh)."""

from __future__ import annotations

import os
import threading
import time

import pika

from amqp_helpers import params_for

QUEUE = "k9.work"
CYCLES = int(os.environ.get("FERRYMQ_KILL9_CYCLES", "4"))


def connect(broker, stop):
    """Connects, retrying while the broker restarts."""
    while not stop.is_set():
        try:
            return pika.BlockingConnection(params_for(broker.url))
        except Exception:
            time.sleep(0.05)
    return None


class Publisher(threading.Thread):
    def __init__(self, broker):
        super().__init__(daemon=True)
        self.broker, self.stop = broker, threading.Event()
        self.attempted, self.confirmed = set(), set()
        self.next = 0

    def run(self):
        while not self.stop.is_set():
            conn = connect(self.broker, self.stop)
            if conn is None:
                return
            try:
                ch = conn.channel()
                ch.confirm_delivery()
                props = pika.BasicProperties(delivery_mode=2)
                while not self.stop.is_set():
                    n = self.next
                    self.next += 1
                    self.attempted.add(n)
                    ch.basic_publish("", QUEUE, str(n).encode(), props)
                    self.confirmed.add(n)  # basic_publish returned: the broker acked it
            except Exception:
                time.sleep(0.02)
            finally:
                try:
                    conn.close()
                except Exception:
                    pass


class Consumer(threading.Thread):
    def __init__(self, broker):
        super().__init__(daemon=True)
        self.broker, self.stop = broker, threading.Event()
        self.delivered = []  # (n, redelivered)

    def run(self):
        while not self.stop.is_set():
            conn = connect(self.broker, self.stop)
            if conn is None:
                return
            try:
                ch = conn.channel()
                ch.basic_qos(prefetch_count=50)
                for method, _props, body in ch.consume(QUEUE, inactivity_timeout=0.1):
                    if self.stop.is_set():
                        break
                    if method is None:
                        continue
                    self.delivered.append((int(body), method.redelivered))
                    ch.basic_ack(method.delivery_tag)
            except Exception:
                time.sleep(0.02)
            finally:
                try:
                    conn.close()
                except Exception:
                    pass


def test_kill9_cycles_lose_no_confirmed_message(private_broker):
    b = private_broker()
    c = pika.BlockingConnection(params_for(b.url))
    c.channel().queue_declare(QUEUE, durable=True)
    c.close()
    pub, con = Publisher(b), Consumer(b)
    pub.start()
    con.start()
    for _ in range(CYCLES):
        time.sleep(0.7)
        b.kill9()
        b.start(same_port=True)
    time.sleep(0.5)
    pub.stop.set()
    pub.join(10)
    # Let the consumer drain what is left, then stop it.
    deadline = time.time() + 20
    while time.time() < deadline:
        seen = {n for n, _ in con.delivered}
        if pub.confirmed <= seen:
            break
        time.sleep(0.1)
    con.stop.set()
    con.join(10)
    seen = [n for n, _ in con.delivered]
    print(f"published {len(pub.attempted)}, confirmed {len(pub.confirmed)}, deliveries {len(seen)}")
    assert pub.confirmed, "the publisher got nothing confirmed"
    missing = pub.confirmed - set(seen)
    assert not missing, f"{len(missing)} confirmed messages never delivered, e.g. {sorted(missing)[:10]}"
    phantom = set(seen) - pub.attempted
    assert not phantom, f"delivered but never published: {sorted(phantom)[:10]}"
    firsts = [n for n, redelivered in con.delivered if not redelivered]
    assert firsts == sorted(firsts), "first deliveries out of publish order"
    assert len(set(firsts)) == len(firsts), "a message was delivered twice without redelivered set"
