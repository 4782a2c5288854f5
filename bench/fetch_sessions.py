"""One consumer fetching PARTS partitions of one topic, in one of three modes, measured in
its own process: request and response bytes/s (this process's socket writes/reads:
/proc/self/io wchar/rchar deltas; nothing else writes during a window) and the broker's
CPU seconds per second (/proc/<pid>/stat utime+stime), idle then under light produce
(a child process producing RATE records/s of 100 B spread over the partitions).

  kp-sessions     kafka-python, incremental fetch sessions (KIP-227, its default)
  kp-sessionless  kafka-python, enable_incremental_fetch_sessions=False
  rdkafka         confluent-kafka (librdkafka: always sessionless)

Usage: fetch_sessions.py MODE BOOTSTRAP TOPIC PARTS BROKER_PID WINDOW_S RATE
Prints one JSON line."""

import json
import os
import subprocess
import sys
import time

mode, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]
parts, broker_pid = int(sys.argv[4]), int(sys.argv[5])
window, rate = float(sys.argv[6]), int(sys.argv[7])
TCK = os.sysconf("SC_CLK_TCK")


def io():
    d = {}
    for line in open("/proc/self/io"):
        k, v = line.split(":")
        d[k] = int(v)
    return d["wchar"], d["rchar"]


def cpu():
    f = open(f"/proc/{broker_pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TCK


if mode == "rdkafka":
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-fs",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 500})
    c.assign([TopicPartition(topic, p, OFFSET_END) for p in range(parts)])

    def poll(until):
        n = 0
        while time.monotonic() < until:
            m = c.poll(0.1)
            if m is not None and not m.error():
                n += 1
        return n
else:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      fetch_max_wait_ms=500,
                      enable_incremental_fetch_sessions=(mode == "kp-sessions"))
    tps = [TopicPartition(topic, p) for p in range(parts)]
    c.assign(tps)
    c.seek_to_end(*tps)

    def poll(until):
        n = 0
        while time.monotonic() < until:
            for msgs in c.poll(timeout_ms=100).values():
                n += len(msgs)
        return n

poll(time.monotonic() + 4)  # warm up: metadata, offsets, the session's full fetch


def measure(label):
    w0, r0 = io()
    c0, t0 = cpu(), time.monotonic()
    n = poll(t0 + window)
    w1, r1 = io()
    dt = time.monotonic() - t0
    return {f"{label}_req_Bps": round((w1 - w0) / dt), f"{label}_resp_Bps": round((r1 - r0) / dt),
            f"{label}_broker_cpu_s_per_s": round((cpu() - c0) / dt, 4), f"{label}_records": n}


out = {"mode": mode, "partitions": parts}
out.update(measure("idle"))
prod = subprocess.Popen([sys.executable, "-c", f"""
import time
from confluent_kafka import Producer
p = Producer({{"bootstrap.servers": "{bootstrap}", "linger.ms": 5}})
i = 0
t = time.monotonic()
while True:
    p.produce("{topic}", value=b"x" * 100, partition=i % {parts})
    p.poll(0)
    i += 1
    t += 1.0 / {rate}
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)
"""])
time.sleep(2)
out.update(measure("produce"))
prod.kill()
prod.wait()
c.close()
print(json.dumps(out), flush=True)
