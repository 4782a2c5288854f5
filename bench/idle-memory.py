#!/usr/bin/env python3
"""Idle memory per queue and per connection of an AMQP broker process.

Usage: idle-memory.py HOST PORT PID [QUEUES] [CONNECTIONS]
Declares QUEUES durable-flag-free queues over one channel, then opens CONNECTIONS idle
connections (each with one channel), and reports the broker's RSS growth per queue and per
connection (from /proc/PID/status VmRSS). Cleans up afterwards."""
import socket, sys, time, uuid

import pika


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle(pid):
    time.sleep(1.0)
    return rss_kib(pid)


def main():
    host, port, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    nq = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
    nc = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    params = pika.ConnectionParameters(host, port, heartbeat=0)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    prefix = "idle-" + uuid.uuid4().hex[:8] + "-"
    base = settle(pid)
    for i in range(nq):
        ch.queue_declare(prefix + str(i))
    after_q = settle(pid)
    per_q = (after_q - base) * 1024 / nq
    conns = []
    for _ in range(nc):
        c = pika.BlockingConnection(params)
        c.channel()
        conns.append(c)
    after_c = settle(pid)
    per_c = (after_c - after_q) * 1024 / nc
    print(f"queues: {nq} idle queues add {(after_q - base) / 1024:.1f} MiB = {per_q / 1024:.2f} KiB per queue")
    print(f"connections: {nc} idle connections (1 channel each) add {(after_c - after_q) / 1024:.1f} MiB = {per_c / 1024:.2f} KiB per connection")
    for c in conns:
        c.close()
    for i in range(nq):
        ch.queue_delete(prefix + str(i))
    conn.close()


if __name__ == "__main__":
    main()
