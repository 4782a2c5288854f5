"""What AddPartitionsToTxn's transaction-log fsync costs (issue 11: should the broker answer
it before the fsync?). Raw requests on one connection, no client library in between:

    python bench/kafka_txn_addparts.py BOOTSTRAP [TRANSACTIONS]

Per transaction: AddPartitionsToTxn v1 of partition 0 (a new partition for the id: the
coordinator appends the id's value to its log and fsyncs before answering), the same
request again (already in the transaction: no write, no fsync, same code path otherwise),
then EndTxn v1 abort. Prints p50/p99 of both AddPartitionsToTxn round trips and their
difference (what answering before the fsync could save per transaction at most), and
ApiVersions v0 round trips as a floor."""

import socket
import statistics
import struct
import sys
import time
import uuid

from confluent_kafka.admin import AdminClient, NewTopic

BOOT = sys.argv[1]
TXNS = int(sys.argv[2]) if len(sys.argv) > 2 else 2000


def kstr(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class Conn:
    def __init__(self, boot):
        host, port = boot.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=30)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.corr = 0

    def call(self, key, ver, body):
        self.corr += 1
        payload = struct.pack(">hhi", key, ver, self.corr) + kstr("addparts-bench") + body
        self.s.sendall(struct.pack(">i", len(payload)) + payload)
        n = struct.unpack(">i", self.exact(4))[0]
        return self.exact(n)[4:]

    def exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.s.recv(n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


topic = f"bench.addparts.{uuid.uuid4().hex[:8]}"
admin = AdminClient({"bootstrap.servers": BOOT})  # kept alive until the result
admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
time.sleep(0.3)
c = Conn(BOOT)
tid = f"addparts-{uuid.uuid4().hex}"
r = c.call(22, 1, kstr(tid) + struct.pack(">i", 60000))
_, err, pid, epoch = struct.unpack(">ihqh", r[:16])
assert err == 0, err
add = kstr(tid) + struct.pack(">qhi", pid, epoch, 1) + kstr(topic) + struct.pack(">ii", 1, 0)
first, again, floor = [], [], []
for i in range(TXNS):
    while True:
        t0 = time.perf_counter()
        r = c.call(24, 1, add)
        dt = time.perf_counter() - t0
        code = struct.unpack(">h", r[-2:])[0]
        if code == 0:
            break
        assert code == 51, code  # CONCURRENT_TRANSACTIONS: the last abort's markers
        time.sleep(0.0005)
    first.append(dt * 1e3)
    t0 = time.perf_counter()
    r = c.call(24, 1, add)
    again.append((time.perf_counter() - t0) * 1e3)
    assert struct.unpack(">h", r[-2:])[0] == 0
    t0 = time.perf_counter()
    c.call(18, 0, b"")
    floor.append((time.perf_counter() - t0) * 1e3)
    r = c.call(26, 1, kstr(tid) + struct.pack(">qhb", pid, epoch, 0))
    assert struct.unpack(">ih", r[:6])[1] == 0
print(f"transactions={TXNS}")
for name, xs in (("AddPartitionsToTxn, new partition (log append + fsync)", first),
                 ("AddPartitionsToTxn, already added (no write)", again),
                 ("ApiVersions v0 (floor)", floor)):
    print(f"{name:56s} p50 {pct(xs, .5):.3f} ms  p99 {pct(xs, .99):.3f} ms")
print(f"difference of medians (the fsync round's cost): "
      f"{statistics.median(first) - statistics.median(again):.3f} ms")
