#!/usr/bin/env python3
"""Initial seeds for the fuzz corpora (fuzz/corpus/<target>/seed-*): a few well-formed
inputs per decoder, built by hand (AMQP) or with kafka-python's own encoders (Kafka record
batches). afl-fuzz grows the corpus from them; afl-cmin keeps it small.
    .venv/bin/python fuzz/seeds.py
"""
import struct
from pathlib import Path

from kafka.record.default_records import DefaultRecordBatchBuilder

OUT = Path(__file__).resolve().parent / "corpus"


def shortstr(s: bytes) -> bytes:
    return bytes([len(s)]) + s


def longstr(s: bytes) -> bytes:
    return struct.pack(">I", len(s)) + s


def table(items: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(shortstr(k) + v for k, v in items)
    return longstr(body)


def method(cls: int, mid: int, args: bytes) -> bytes:
    return struct.pack(">HH", cls, mid) + args


def frame(kind: int, chan: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, chan, len(payload)) + payload + b"\xce"


CAPS = table([(b"publisher_confirms", b"t\x01"), (b"connection.blocked", b"t\x01"),
              (b"x", b"I\x00\x00\x00\x05"), (b"s", b"S" + longstr(b"pika")),
              (b"n", b"F" + table([(b"d", b"d" + b"\x00" * 8)])),
              (b"a", b"A" + longstr(b"b\x01s\x00\x02l" + b"\x00" * 8))])
METHODS = {
    "start_ok": method(10, 11, table([(b"capabilities", b"F" + CAPS)]) + shortstr(b"PLAIN")
                       + longstr(b"\x00guest\x00guest") + shortstr(b"en_US")),
    "tune_ok": method(10, 31, struct.pack(">HIH", 2047, 131072, 60)),
    "open": method(10, 40, shortstr(b"/") + shortstr(b"") + b"\x00"),
    "publish": method(60, 40, b"\x00\x00" + shortstr(b"amq.direct") + shortstr(b"rk") + b"\x03"),
    "queue_declare": method(50, 10, b"\x00\x00" + shortstr(b"q") + b"\x02"
                            + table([(b"x-max-priority", b"b\x05"),
                                     (b"x-queue-type", b"S" + longstr(b"quorum"))])),
    "consume": method(60, 20, b"\x00\x00" + shortstr(b"q") + shortstr(b"tag") + b"\x00"
                      + table([])),
    "ack": method(60, 80, struct.pack(">QB", 7, 1)),
    "qos": method(60, 10, struct.pack(">IHB", 0, 100, 0)),
    "bind": method(50, 20, b"\x00\x00" + shortstr(b"q") + shortstr(b"amq.headers")
                   + shortstr(b"") + b"\x00" + table([(b"x-match", b"S" + longstr(b"all"))])),
    "select": method(85, 10, b"\x00"),
}
# Content header: class 60, weight 0, body size, flags (content-type, headers,
# delivery-mode, priority, message-id), then the properties.
HEADERS = {
    "props": struct.pack(">HHQH", 60, 0, 1000, 0xB000 | 0x0800 | 0x0100)
    + shortstr(b"text/plain") + table([(b"x-delay", b"l" + struct.pack(">q", 500))])
    + b"\x02\x05" + shortstr(b"id-1"),
    "empty": struct.pack(">HHQH", 60, 0, 0, 0),
}


def kafka_req(api: int, ver: int, body: bytes, flexible: bool = False) -> bytes:
    hdr = struct.pack(">hhi", api, ver, 7) + struct.pack(">h", 4) + b"fuzz"
    if flexible:
        hdr += b"\x00"
    msg = hdr + body
    return struct.pack(">i", len(msg)) + msg


def record_batch(n: int, compression: int = 0) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=0,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 20)
    for i in range(n):
        b.append(i, timestamp=1700000000000 + i, key=b"k%d" % i, value=b"v" * (i + 1),
                 headers=[("h", b"x")])
    return bytes(b.build())


def main():
    seeds = {
        "amqp_frame": {
            "header": b"AMQP\x00\x00\x09\x01",
            "method": frame(1, 1, METHODS["publish"]),
            "content": frame(2, 1, HEADERS["props"]),
            "body": frame(3, 1, b"hello"),
            "heartbeat": frame(8, 0, b""),
        },
        "amqp_method": METHODS,
        "amqp_content_header": HEADERS,
        "kafka_request": {
            "api_versions_v0": kafka_req(18, 0, b""),
            "api_versions_v3": kafka_req(18, 3, b"\x05fuzz\x041.0\x00", flexible=True),
            "metadata_v1": kafka_req(3, 1, struct.pack(">i", 1) + struct.pack(">h", 1) + b"t"),
            "produce_v3": kafka_req(0, 3, struct.pack(">hhi", -1, -1, 1000)
                                    + struct.pack(">ih", 1, 1) + b"t" + struct.pack(">ii", 1, 0)
                                    + (lambda rb: struct.pack(">i", len(rb)) + rb)(record_batch(2))),
            "fetch_v4": kafka_req(1, 4, struct.pack(">iiiib", -1, 500, 1, 1 << 20, 0)
                                  + struct.pack(">ih", 1, 1) + b"t"
                                  + struct.pack(">iiqi", 1, 0, 0, 1 << 20)),
        },
        "kafka_record_batch": {
            "one": record_batch(1),
            "three": record_batch(3),
            "gzip": record_batch(4, compression=1),
            "two_batches": record_batch(1) + record_batch(2),
        },
        "kafka_sasl": {
            # op byte, length byte, bytes: handshake PLAIN v1, authenticate \0bob\0secret.
            "plain_ok": b"\x01" + b"\x80\x00" + b"\x01\x0b\x00bob\x00secret" + b"\x03\x00",
            "scram": b"\x00" + b"\x84\x00" + b"\x01\x16n,,n=bob,r=abcdefghij",
            "v0_token": b"\x00" + b"\x00\x00" + b"\x02\x0b\x00bob\x00secret" + b"\x03\x00",
        },
    }
    for target, items in seeds.items():
        d = OUT / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in items.items():
            (d / f"seed-{name}").write_bytes(data)
        print(target, len(items))


if __name__ == "__main__":
    main()
