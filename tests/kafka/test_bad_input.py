"""Bad input on a raw socket: truncated requests, unknown API keys and versions, corrupt
record batches. Each gets the answer Kafka gives (an error code, or the connection
closed) and never affects the broker or other connections."""

from __future__ import annotations

import socket
import struct

import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

import kafka_helpers as kh

NONE, CORRUPT_MESSAGE, UNSUPPORTED_VERSION = 0, 2, 35
INVALID_REQUIRED_ACKS = 21


def connect(bootstrap: str) -> socket.socket:
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def kstr(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def request(api_key: int, version: int, corr: int, body: bytes, client: str = "raw") -> bytes:
    msg = struct.pack(">hhi", api_key, version, corr) + kstr(client) + body
    return struct.pack(">i", len(msg)) + msg


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def response(s: socket.socket) -> bytes:
    (n,) = struct.unpack(">i", recv_exact(s, 4))
    return recv_exact(s, n)


def closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return False


def api_versions_v0(s, corr=1):
    s.sendall(request(18, 0, corr, b""))
    r = response(s)
    got_corr, err, n = struct.unpack(">ihi", r[:10])
    keys = {}
    for i in range(n):
        k, lo, hi = struct.unpack(">hhh", r[10 + 6 * i:16 + 6 * i])
        keys[k] = (lo, hi)
    return got_corr, err, keys


def assert_broker_healthy(bootstrap):
    s = connect(bootstrap)
    try:
        corr, err, keys = api_versions_v0(s, 77)
        assert (corr, err) == (77, NONE)
    finally:
        s.close()


def test_api_versions_lists_the_apis_clients_need(bootstrap):
    s = connect(bootstrap)
    try:
        corr, err, keys = api_versions_v0(s)
    finally:
        s.close()
    assert (corr, err) == (1, NONE)
    # Produce, Fetch, ListOffsets, Metadata, OffsetCommit, OffsetFetch, FindCoordinator,
    # JoinGroup, Heartbeat, LeaveGroup, SyncGroup, ApiVersions, CreateTopics, DeleteTopics.
    for k in [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18, 19, 20]:
        assert k in keys, f"API key {k} not advertised: {sorted(keys)}"
        lo, hi = keys[k]
        assert 0 <= lo <= hi


def test_api_versions_unsupported_version_answers_v0_with_key_list(bootstrap):
    """KIP-511: a too-new ApiVersions gets UNSUPPORTED_VERSION in v0 format, with the
    supported ranges, so the client can retry with a version the broker knows."""
    s = connect(bootstrap)
    try:
        s.sendall(request(18, 999, 5, b""))
        r = response(s)
        corr, err, n = struct.unpack(">ihi", r[:10])
        assert corr == 5 and err == UNSUPPORTED_VERSION
        keys = {struct.unpack(">h", r[10 + 6 * i:12 + 6 * i])[0] for i in range(n)}
        assert 18 in keys and 0 in keys
        # The connection stays usable.
        assert api_versions_v0(s, 6)[:2] == (6, NONE)
    finally:
        s.close()


def test_unknown_api_key_closes_only_that_connection(bootstrap):
    other = connect(bootstrap)
    s = connect(bootstrap)
    try:
        s.sendall(request(4242, 0, 9, b"\x00" * 8))
        assert closed_by_peer(s)
        assert api_versions_v0(other, 3)[:2] == (3, NONE)
    finally:
        s.close()
        other.close()
    assert_broker_healthy(bootstrap)


def test_unsupported_version_of_known_api_closes_connection(bootstrap):
    s = connect(bootstrap)
    try:
        s.sendall(request(3, 999, 9, b"\x00" * 8))  # Metadata v999
        assert closed_by_peer(s)
    finally:
        s.close()
    assert_broker_healthy(bootstrap)


@pytest.mark.parametrize("raw", [
    struct.pack(">i", 100) + b"\x00\x12\x00\x00",              # size says 100, 4 sent, then EOF
    struct.pack(">i", -5),                                       # negative size
    struct.pack(">i", 0x7FFFFFFF) + b"\x00" * 16,                # absurd size
    struct.pack(">i", 2) + b"\x00\x12",                          # header cut inside
    request(18, 0, 1, b"")[:-3] + b"",                           # cut client id
    request(3, 4, 1, struct.pack(">i", 5) + b"\x00\x03ab"),      # Metadata with cut topic
])
def test_truncated_or_garbage_request(bootstrap, raw):
    s = connect(bootstrap)
    try:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        # Either a clean close or an error response, never a hang: read until EOF.
        s.settimeout(10)
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
    finally:
        s.close()
    assert_broker_healthy(bootstrap)


def batch(n: int = 3) -> bytearray:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 20)
    for i in range(n):
        b.append(i, timestamp=1_700_000_000_000 + i, key=None,
                 value=f"raw-{i}".encode(), headers=[])
    return b.build()


def produce_v3(topic: str, records: bytes, acks: int = -1) -> bytes:
    body = kstr(None) + struct.pack(">hi", acks, 10000)
    body += struct.pack(">i", 1) + kstr(topic) + struct.pack(">i", 1)
    body += struct.pack(">i", 0) + struct.pack(">i", len(records)) + records
    return request(0, 3, 11, body)


def produce_v3_error(s) -> tuple[int, int]:
    r = response(s)
    (corr,) = struct.unpack(">i", r[:4])
    pos = 4
    (ntopics,) = struct.unpack(">i", r[pos:pos + 4]); pos += 4
    assert ntopics == 1
    (tlen,) = struct.unpack(">h", r[pos:pos + 2]); pos += 2 + tlen
    (nparts,) = struct.unpack(">i", r[pos:pos + 4]); pos += 4
    assert nparts == 1
    idx, err, base = struct.unpack(">ihq", r[pos:pos + 14])
    return err, base


def test_corrupt_batch_gets_corrupt_message(bootstrap, topic):
    t = topic(partitions=1)
    s = connect(bootstrap)
    try:
        good = batch()
        s.sendall(produce_v3(t, bytes(good)))
        assert produce_v3_error(s) == (NONE, 0)

        bad = batch()
        bad[-1] ^= 0xFF  # flip a value byte: the CRC32C no longer matches
        s.sendall(produce_v3(t, bytes(bad)))
        err, _ = produce_v3_error(s)
        assert err == CORRUPT_MESSAGE

        short = bytes(batch())[:-4]  # batch length says more than there is
        s.sendall(produce_v3(t, short))
        err, _ = produce_v3_error(s)
        assert err == CORRUPT_MESSAGE

        magic1 = batch()
        magic1[16] = 1  # magic byte: v2 only
        s.sendall(produce_v3(t, bytes(magic1)))
        err, _ = produce_v3_error(s)
        assert err in (CORRUPT_MESSAGE, 87)  # 87 INVALID_RECORD
    finally:
        s.close()
    # Only the good batch was stored.
    assert [r.value for r in kh.consume_to_end(bootstrap, t)] == [b"raw-0", b"raw-1", b"raw-2"]


def test_invalid_required_acks(bootstrap, topic):
    t = topic(partitions=1)
    s = connect(bootstrap)
    try:
        s.sendall(produce_v3(t, bytes(batch()), acks=5))
        err, _ = produce_v3_error(s)
        assert err == INVALID_REQUIRED_ACKS
    finally:
        s.close()
