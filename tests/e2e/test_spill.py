"""Backlogs cost disk, not RAM (issue 10): with a small --queue-memory-budget, a backlog of
1 KiB transient messages in a non-durable priority queue pages to a scratch log under the
data dir while the broker's RSS stays bounded; a consumer then gets every message, highest
priority first and in publish order within a priority; a restart (after kill -9, with a
backlog on disk) removes the scratch logs.

Skipped when FERRYMQ_TEST_AMQP_URL points the suite at an external broker."""

from __future__ import annotations

import pika

from amqp_helpers import params_for

BODY = 1024
N = 20_000


def rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def scratch_files(data_dir) -> int:
    root = data_dir / "scratch"
    if not root.exists():
        return 0
    return sum(len(list(q.iterdir())) for q in root.iterdir())


def body(seq: int, prio: int) -> bytes:
    return seq.to_bytes(8, "big") + bytes([prio]) + b"." * (BODY - 9)


def test_priority_backlog_pages_to_scratch_and_drains_in_order(private_broker):
    b = private_broker(extra_args=["--queue-memory-budget", "4MiB"])
    pid = b.proc.pid
    c = pika.BlockingConnection(params_for(b.url))
    ch = c.channel()
    ch.queue_declare("spill.p", durable=False, arguments={"x-max-priority": 9})
    base = rss_mb(pid)
    peak = base
    for seq in range(N):
        p = seq % 10
        ch.basic_publish("", "spill.p", body(seq, p),
                         pika.BasicProperties(priority=p, delivery_mode=1))
        if seq % 5000 == 0:
            peak = max(peak, rss_mb(pid))
    peak = max(peak, rss_mb(pid))
    assert scratch_files(b.data_dir) > 0, "the backlog is paged to a scratch log"
    # 20 MB of bodies (~26 MB with bookkeeping) would sit in RAM without paging.
    assert peak - base < 15, f"RSS grew {peak - base} MB (base {base} MB)"
    assert ch.queue_declare("spill.p", passive=True).method.message_count == N

    ch.basic_qos(prefetch_count=500)
    last = None
    got = 0
    for method, _props, data in ch.consume("spill.p", inactivity_timeout=10):
        assert method is not None, f"stalled after {got} messages"
        seq = int.from_bytes(data[:8], "big")
        p = data[8]
        assert len(data) == BODY
        if last is not None:
            lp, ls = last
            assert p < lp or (p == lp and seq > ls), (got, p, seq, lp, ls)
        last = (p, seq)
        got += 1
        if got % 250 == 0 or got == N:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if got == N:
            break
    ch.cancel()
    # Everything left the queue: its scratch files are gone.
    assert ch.queue_declare("spill.p", passive=True).method.message_count == 0
    assert scratch_files(b.data_dir) == 0

    # A backlog on disk at a crash: the restart removes its scratch log.
    for seq in range(5_000):
        ch.basic_publish("", "spill.p", body(seq, 0), pika.BasicProperties(priority=0))
    assert scratch_files(b.data_dir) > 0
    c.close()
    b.kill9()
    b.start()
    assert not (b.data_dir / "scratch").exists()
