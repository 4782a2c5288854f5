"""Produce-then-consume throughput with confluent-kafka (librdkafka), the client the
issue's reference figures for tansu were taken with. Prints one JSON line.

    python bench/kafka_confluent_bench.py --bootstrap 127.0.0.1:9092 --topic t \
        --count 1000000 --size 100 --acks all

Produces COUNT records of SIZE bytes to partition 0 of TOPIC (created by the broker on
first use, or beforehand by the caller), waits for every delivery report, then reads them
back from the beginning with an assigned (group-less) consumer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition


def produce(args) -> dict:
    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": args.acks,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "compression.type": args.compression,
        "enable.idempotence": False,
    })
    value = b"x" * args.size
    errors = 0
    acked = 0

    def on_delivery(err, msg):
        nonlocal errors, acked
        if err is not None:
            errors += 1
        else:
            acked += 1

    start = time.perf_counter()
    for _ in range(args.count):
        while True:
            try:
                p.produce(args.topic, value, partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.001)
    left = p.flush(120)
    secs = time.perf_counter() - start
    return {"produced": acked, "produce_errors": errors + left, "produce_seconds": secs,
            "produce_records_per_sec": acked / secs,
            "produce_mb_per_sec": acked * args.size / secs / 1e6}


def consume(args) -> dict:
    c = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"bench-{time.time_ns()}",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 8_388_608,
        "queued.max.messages.kbytes": 1_048_576,
    })
    c.assign([TopicPartition(args.topic, 0, OFFSET_BEGINNING)])
    got = 0
    start = time.perf_counter()
    deadline = start + args.timeout
    while got < args.count and time.perf_counter() < deadline:
        for m in c.consume(num_messages=10_000, timeout=0.5):
            if m.error() is None:
                got += 1
            elif m.error().code() != KafkaError._PARTITION_EOF:
                print(f"consume error: {m.error()}", file=sys.stderr)
    secs = time.perf_counter() - start
    c.close()
    return {"consumed": got, "consume_seconds": secs, "consume_records_per_sec": got / secs,
            "consume_mb_per_sec": got * args.size / secs / 1e6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--acks", default="all")
    ap.add_argument("--compression", default="none")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--mode", choices=["produce", "consume", "both"], default="both")
    args = ap.parse_args()
    out = {}
    if args.mode in ("produce", "both"):
        out.update(produce(args))
    if args.mode in ("consume", "both"):
        out.update(consume(args))
    print(json.dumps(out))
    ok = (out.get("produce_errors", 0) == 0
          and out.get("consumed", args.count) >= args.count)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
