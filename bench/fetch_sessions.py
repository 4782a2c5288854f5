"""One consumer fetching PARTS partitions of one topic, in one of three modes: Fetch
request and response bytes/s, read from the broker's own counters
(ferrymq_kafka_request_bytes_total / ferrymq_kafka_response_bytes_total {api="Fetch"} on
its Prometheus endpoint: every byte of every Fetch request it read and response it
wrote, size prefixes included; this consumer is the only one fetching during a window),
Fetch requests/s, and the broker's CPU seconds per second (/proc/<pid>/stat
utime+stime), idle then under light produce (a child process producing RATE records/s
of 100 B spread over the partitions).

  kp-sessions     kafka-python, incremental fetch sessions (KIP-227, its default)
  kp-sessionless  kafka-python, enable_incremental_fetch_sessions=False
  rdkafka         confluent-kafka (librdkafka: always sessionless)

Usage: fetch_sessions.py MODE BOOTSTRAP TOPIC PARTS BROKER_PID WINDOW_S RATE METRICS_URL
Prints one JSON line."""

import json
import os
import re
import urllib.request
import subprocess
import sys
import time

mode, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]
parts, broker_pid = int(sys.argv[4]), int(sys.argv[5])
window, rate = float(sys.argv[6]), int(sys.argv[7])
metrics_url = sys.argv[8]
TCK = os.sysconf("SC_CLK_TCK")


def io():
    """(Fetch request bytes, Fetch response bytes, Fetch requests) the broker counted."""
    text = urllib.request.urlopen(metrics_url).read().decode()

    def get(pattern):
        m = re.search(pattern, text, re.M)
        return int(float(m.group(1))) if m else 0
    reqs = sum(get(rf'^ferrymq_kafka_fetch_requests_total{{kind="{k}"}} (\S+)')
               for k in ("sessionless", "full", "incremental", "session_error"))
    return (get(r'^ferrymq_kafka_request_bytes_total{api="Fetch"} (\S+)'),
            get(r'^ferrymq_kafka_response_bytes_total{api="Fetch"} (\S+)'), reqs)


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
    w0, r0, q0 = io()
    c0, t0 = cpu(), time.monotonic()
    n = poll(t0 + window)
    w1, r1, q1 = io()
    dt = time.monotonic() - t0
    return {f"{label}_req_Bps": round((w1 - w0) / dt), f"{label}_resp_Bps": round((r1 - r0) / dt),
            f"{label}_fetches_per_s": round((q1 - q0) / dt, 2),
            f"{label}_req_B_per_fetch": round((w1 - w0) / max(q1 - q0, 1)),
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
