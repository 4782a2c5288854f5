"""Fixtures for the memory suite: each test starts its own FerryMQ (ports 0, its own data
dir, a small --memory-high-watermark) and reads the broker's RSS from /proc.

FERRYMQ_BIN selects the binary (default <repo>/target/release/ferrymq).
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pika
import pika.frame
import pika.spec
import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import ferryfixtures  # noqa: E402
from ferrybroker import Broker  # noqa: E402
from ferryfixtures import start_broker  # noqa: E402,F401


@pytest.fixture
def brokers():
    """brokers(*args, kafka=False) -> a started broker (stopped at the end)."""
    started: list[Broker] = []

    def make(*args: str, kafka: bool = False) -> Broker:
        b = start_broker(*args, kafka=kafka)
        started.append(b)
        return b

    yield make
    for b in started:
        b.cleanup()


def rss(pid: int) -> int:
    """Resident set size of a process, bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class RssSampler:
    """Samples a process's RSS every 20 ms in a thread and keeps the peak."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                r = rss(self.pid)
            except (OSError, RuntimeError):
                return
            self.peak = max(self.peak, r)
            self.samples.append((time.monotonic(), r))
            time.sleep(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak


def node(b: Broker) -> dict:
    r = requests.get(b.http_url + "/api/nodes", auth=("guest", "guest"), timeout=10)
    r.raise_for_status()
    return r.json()[0]


def alarm_metric(b: Broker) -> float:
    """`rabbitmq_alarms_memory_used_watermark` from the Prometheus port (no auth)."""
    r = requests.get(b.prometheus_url + "/metrics", timeout=10)
    r.raise_for_status()
    for line in r.text.splitlines():
        if line.startswith("rabbitmq_alarms_memory_used_watermark "):
            return float(line.split()[1])
    raise AssertionError("rabbitmq_alarms_memory_used_watermark missing from /metrics")


def wait_until(predicate, timeout: float = 30.0, what: str = "condition", step=0.05):
    """`ferryfixtures.wait_until` with this suite's longer default (floods take a while)."""
    return ferryfixtures.wait_until(predicate, timeout, what, step)


def params(b: Broker, **kw) -> pika.URLParameters:
    p = pika.URLParameters(b.url)
    p.connection_attempts = 1
    p.socket_timeout = 10
    for k, v in kw.items():
        setattr(p, k, v)
    return p


# ---- a lean AMQP client on raw sockets, framed with pika's own codec ----

def method_frame(channel: int, method) -> bytes:
    return pika.frame.Method(channel, method).marshal()


def publish_frames(channel: int, exchange: str, routing_key: str, body: bytes) -> bytes:
    props = pika.spec.BasicProperties(delivery_mode=1)
    return (method_frame(channel, pika.spec.Basic.Publish(exchange=exchange,
                                                        routing_key=routing_key))
            + pika.frame.Header(channel, len(body), props).marshal()
            + pika.frame.Body(channel, body).marshal())


def handshake_bytes(user: str = "guest", password: str = "guest", vhost: str = "/",
                    frame_max: int = 131072, capabilities: dict | None = None) -> bytes:
    """Protocol header, start-ok, tune-ok, open and channel 1 open, pipelined (the broker
    handles frames in order, so a client need not wait between them)."""
    props = {"product": "memory-suite",
             "capabilities": capabilities or {"connection.blocked": True}}
    return (b"AMQP\x00\x00\x09\x01"
            + method_frame(0, pika.spec.Connection.StartOk(
                client_properties=props, mechanism="PLAIN",
                response=f"\0{user}\0{password}", locale="en_US"))
            + method_frame(0, pika.spec.Connection.TuneOk(channel_max=16, frame_max=frame_max,
                                                          heartbeat=0))
            + method_frame(0, pika.spec.Connection.Open(virtual_host=vhost))
            + method_frame(1, pika.spec.Channel.Open()))


def read_frames(data: bytearray):
    """Decodes and removes the complete frames at the front of `data`."""
    out = []
    while len(data) >= 7:
        kind, ch, size = struct.unpack(">BHI", data[:7])
        if len(data) < 8 + size:
            break
        payload = bytes(data[7:7 + size])
        del data[:8 + size]
        if kind == 1:
            cls, mid = struct.unpack(">HH", payload[:4])
            m = pika.spec.methods[(cls << 16) | mid]()
            m.decode(payload, 4)
            out.append((ch, m))
        else:
            out.append((ch, kind))
    return out


def raw_connect(b: Broker, extra: bytes = b"", timeout: float = 10) -> socket.socket:
    s = socket.create_connection((b.host, b.port), timeout=timeout)
    s.sendall(handshake_bytes() + extra)
    return s


def expect_open(s: socket.socket, timeout: float = 10.0) -> list:
    """Reads until channel 1 is open; returns the frames seen."""
    buf = bytearray()
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed during handshake: {seen}")
        buf += chunk
        for ch, m in read_frames(buf):
            seen.append((ch, m))
            if isinstance(m, pika.spec.Connection.Close):
                raise AssertionError(f"connection.close {m.reply_code} {m.reply_text}")
            if ch == 1 and isinstance(m, pika.spec.Channel.OpenOk):
                return seen
    raise AssertionError("handshake timed out")
