"""Work queues: competing consumers, each message to exactly one consumer,
fair dispatch with prefetch_count=1."""

from __future__ import annotations

import threading
import time

import pika

from amqp_helpers import params_for, ready_count


class Worker(threading.Thread):
    """A consumer on its own connection, acking each message after `delay` s."""

    def __init__(self, url, queue, name, delay, prefetch, sink, lock, done):
        super().__init__(name=name, daemon=True)
        self.url, self.queue, self.delay, self.prefetch = url, queue, delay, prefetch
        self.sink, self.lock, self.done = sink, lock, done
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error = None
        self.max_unacked = 0
        self._unacked = 0

    def run(self):
        try:
            conn = pika.BlockingConnection(params_for(self.url))
            ch = conn.channel()
            if self.prefetch is not None:
                ch.basic_qos(prefetch_count=self.prefetch)

            def on_msg(chan, method, props, body):
                self._unacked += 1
                self.max_unacked = max(self.max_unacked, self._unacked)
                with self.lock:
                    self.sink.append((self.name, body, method.redelivered))
                    if len(self.sink) >= self.done[0]:
                        self.done[1].set()
                if self.delay:
                    time.sleep(self.delay)  # simulated work
                chan.basic_ack(method.delivery_tag)
                self._unacked -= 1

            ch.basic_consume(self.queue, on_msg)
            self.ready.set()
            while not self.stop.is_set():
                conn.process_data_events(time_limit=0.05)
            conn.close()
        except Exception as e:  # surfaced by the test
            self.error = e
            self.ready.set()


def run_workers(broker, ch, queue, n, specs):
    received, lock, all_in = [], threading.Lock(), threading.Event()
    workers = [Worker(broker.url, queue, name, delay, prefetch, received, lock, (n, all_in))
               for name, delay, prefetch in specs]
    for w in workers:
        w.start()
    for w in workers:
        assert w.ready.wait(15), f"{w.name} did not start consuming"
        assert w.error is None, w.error
    # both consumers are registered before anything is published
    assert ch.queue_declare(queue, passive=True).method.consumer_count == len(specs)
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", queue, f"task-{i}".encode(),
                         pika.BasicProperties(delivery_mode=2))
    finished = all_in.wait(60)
    for w in workers:
        w.stop.set()
    for w in workers:
        w.join(15)
    for w in workers:
        assert w.error is None, f"{w.name}: {w.error!r}"
    assert finished, f"only {len(received)} of {n} messages consumed"
    return received, workers


def test_competing_consumers_each_message_once(broker, ch, uniq, cleanup):
    q = cleanup.queue(uniq("q.work"))
    ch.queue_declare(q, durable=True)
    n = 200
    received, _ = run_workers(broker, ch, q, n, [("a", 0, 10), ("b", 0, 10), ("c", 0, 10)])
    got = [body.decode() for _w, body, _r in received]
    assert sorted(got) == sorted(f"task-{i}" for i in range(n)), "lost or duplicated messages"
    assert not any(r for _w, _b, r in received)
    per_worker = {name: sum(1 for w, _b, _r in received if w == name) for name in "abc"}
    # round-robin between idle consumers: every consumer takes part
    assert all(c > 0 for c in per_worker.values()), per_worker
    assert ready_count(ch, q) == 0


def test_fair_dispatch_prefetch_one(broker, ch, uniq, cleanup):
    q = cleanup.queue(uniq("q.fair"))
    ch.queue_declare(q, durable=True)
    n = 20
    received, workers = run_workers(
        broker, ch, q, n, [("slow", 0.5, 1), ("fast", 0, 1)])
    got = [body.decode() for _w, body, _r in received]
    assert sorted(got) == sorted(f"task-{i}" for i in range(n))
    slow = sum(1 for w, _b, _r in received if w == "slow")
    fast = sum(1 for w, _b, _r in received if w == "fast")
    # With prefetch 1 the slow worker holds one message at a time while the
    # fast one drains the rest; plain round-robin would give 10/10.
    assert fast >= 3 * slow and slow <= 4, {"slow": slow, "fast": fast}
    assert all(w.max_unacked <= 1 for w in workers)
    # each worker processes its own messages in queue order
    for name in ("slow", "fast"):
        seq = [int(b.decode().split("-")[1]) for w, b, _r in received if w == name]
        assert seq == sorted(seq), (name, seq)
    assert ready_count(ch, q) == 0


def test_prefetch_limits_unacked_deliveries(conn, ch, uniq):
    q = ch.queue_declare(uniq("q.prefetch"), exclusive=True).method.queue
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", q, str(i).encode())
    cch = conn.channel()
    cch.basic_qos(prefetch_count=3)
    got = []
    cch.basic_consume(q, lambda c, m, p, b: got.append(m))
    deadline = time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    # no event can signal "nothing more will come": give the broker a moment
    conn.process_data_events(time_limit=0.5)
    assert len(got) == 3
    cch.basic_ack(got[-1].delivery_tag, multiple=True)
    deadline = time.monotonic() + 10
    while len(got) < 6 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    conn.process_data_events(time_limit=0.5)
    assert len(got) == 6
    assert [m.delivery_tag for m in got] == [1, 2, 3, 4, 5, 6]
