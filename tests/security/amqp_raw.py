"""A minimal AMQP 0-9-1 handshake over a raw (optionally TLS) socket, for what pika cannot
do: AMQPLAIN logins (pika speaks PLAIN and EXTERNAL only), unknown mechanisms, clients
without the `authentication_failure_close` capability, reading the mechanisms the server
offers in connection.start, and garbage on the wire."""

from __future__ import annotations

import socket
import ssl
import struct
import time
from dataclasses import dataclass, field

FRAME_METHOD = 1
FRAME_END = 0xCE
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


class Closed(Exception):
    """The server closed the socket (EOF or reset) before the expected frame."""


# ----------------------------------------------------------------- field tables

def shortstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">B", len(b)) + b


def longstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def _value(v) -> bytes:
    if isinstance(v, bool):
        return b"t" + struct.pack(">B", 1 if v else 0)
    if isinstance(v, int):
        return b"l" + struct.pack(">q", v)
    if isinstance(v, (str, bytes)):
        return b"S" + longstr(v)
    if isinstance(v, dict):
        return b"F" + table(v)
    raise TypeError(f"unsupported field value {v!r}")


def table_items(d: dict) -> bytes:
    """The body of a field table without its length prefix (AMQPLAIN's response format)."""
    return b"".join(shortstr(k) + _value(v) for k, v in d.items())


def table(d: dict) -> bytes:
    body = table_items(d)
    return struct.pack(">I", len(body)) + body


def _parse_value(buf: bytes, i: int):
    t = buf[i:i + 1]
    i += 1
    if t == b"t":
        return bool(buf[i]), i + 1
    if t == b"b":
        return struct.unpack_from(">b", buf, i)[0], i + 1
    if t == b"B":
        return buf[i], i + 1
    if t == b"s":
        return struct.unpack_from(">h", buf, i)[0], i + 2
    if t == b"u":
        return struct.unpack_from(">H", buf, i)[0], i + 2
    if t == b"I":
        return struct.unpack_from(">i", buf, i)[0], i + 4
    if t == b"i":
        return struct.unpack_from(">I", buf, i)[0], i + 4
    if t in (b"l", b"L"):
        return struct.unpack_from(">q", buf, i)[0], i + 8
    if t == b"T":
        return struct.unpack_from(">Q", buf, i)[0], i + 8
    if t == b"f":
        return struct.unpack_from(">f", buf, i)[0], i + 4
    if t == b"d":
        return struct.unpack_from(">d", buf, i)[0], i + 8
    if t == b"D":
        return (buf[i], struct.unpack_from(">I", buf, i + 1)[0]), i + 5
    if t in (b"S", b"x"):
        n = struct.unpack_from(">I", buf, i)[0]
        return bytes(buf[i + 4:i + 4 + n]), i + 4 + n
    if t == b"F":
        return parse_table(buf, i)
    if t == b"A":
        n = struct.unpack_from(">I", buf, i)[0]
        end = i + 4 + n
        j = i + 4
        out = []
        while j < end:
            v, j = _parse_value(buf, j)
            out.append(v)
        return out, end
    if t == b"V":
        return None, i
    raise ValueError(f"unknown field type {t!r}")


def parse_table(buf: bytes, i: int) -> tuple[dict, int]:
    n = struct.unpack_from(">I", buf, i)[0]
    end = i + 4 + n
    j = i + 4
    out = {}
    while j < end:
        kl = buf[j]
        key = buf[j + 1:j + 1 + kl].decode()
        j += 1 + kl
        out[key], j = _parse_value(buf, j)
    return out, end


# ------------------------------------------------------------------------ frames

@dataclass
class Method:
    channel: int
    class_id: int
    method_id: int
    args: bytes

    @property
    def name(self) -> tuple[int, int]:
        return (self.class_id, self.method_id)


@dataclass
class Start:
    mechanisms: list[str]
    server_properties: dict = field(default_factory=dict)


@dataclass
class CloseInfo:
    code: int
    text: str
    class_id: int
    method_id: int


def method_frame(channel: int, class_id: int, method_id: int, args: bytes) -> bytes:
    payload = struct.pack(">HH", class_id, method_id) + args
    return struct.pack(">BHI", FRAME_METHOD, channel, len(payload)) + payload + bytes([FRAME_END])


class RawAmqp:
    """One socket; `sock` may already be wrapped in TLS."""

    def __init__(self, sock: socket.socket, timeout: float = 10.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""

    @classmethod
    def connect(cls, host: str, port: int, timeout: float = 10.0,
                tls: ssl.SSLContext | None = None, server_hostname: str | None = None):
        s = socket.create_connection((host, port), timeout)
        if tls is not None:
            s = tls.wrap_socket(s, server_hostname=server_hostname or host)
        return cls(s, timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- io
    def send(self, data: bytes):
        self.sock.sendall(data)

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError) as e:
                raise Closed(repr(e)) from e
            if not chunk:
                raise Closed("EOF")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self) -> tuple[int, int, bytes]:
        head = self._read(7)
        if head.startswith(b"AMQP"):  # protocol header sent back: version refused
            self.buf = head[7:] + self.buf
            self._read(1)
            raise Closed(f"server answered with a protocol header {head + b'?'!r}")
        ftype, channel, size = struct.unpack(">BHI", head)
        payload = self._read(size)
        end = self._read(1)
        if end[0] != FRAME_END:
            raise ValueError(f"bad frame end {end!r}")
        return ftype, channel, payload

    def read_method(self) -> Method:
        while True:
            ftype, channel, payload = self.read_frame()
            if ftype == FRAME_METHOD:
                class_id, method_id = struct.unpack_from(">HH", payload, 0)
                return Method(channel, class_id, method_id, payload[4:])
            # heartbeats and anything else are skipped

    def read_until_eof(self, timeout: float) -> list[Method]:
        """Methods received until the server closes the socket; AssertionError if it
        is still open after `timeout` seconds."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                got.append(self.read_method())
            except Closed:
                return got
            except (socket.timeout, TimeoutError):
                raise AssertionError(f"socket still open after {timeout}s") from None
            if time.monotonic() > deadline:
                raise AssertionError(f"socket still open after {timeout}s")

    # -- handshake
    def start(self) -> Start:
        self.send(PROTOCOL_HEADER)
        m = self.read_method()
        assert m.name == (10, 10), f"expected connection.start, got {m.name}"
        a = m.args
        i = 2  # version major, minor
        props, i = parse_table(a, i)
        n = struct.unpack_from(">I", a, i)[0]
        mechs = a[i + 4:i + 4 + n].decode().split()
        return Start(mechs, props)

    def start_ok(self, mechanism: str, response: bytes, capabilities: bool = True):
        props = {"product": "ferrymq-security-tests"}
        if capabilities:
            props["capabilities"] = {"authentication_failure_close": True}
        args = table(props) + shortstr(mechanism) + longstr(response) + shortstr("en_US")
        self.send(method_frame(0, 10, 11, args))

    def after_auth(self, vhost: str = "/") -> Method:
        """After start-ok: answers tune with tune-ok, sends connection.open and returns the
        next method (open-ok on success; connection.close on refusal). A close that comes
        instead of tune is returned as is."""
        m = self.read_method()
        if m.name == (10, 30):  # tune
            channel_max, frame_max, heartbeat = struct.unpack_from(">HIH", m.args, 0)
            self.send(method_frame(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
            self.send(method_frame(0, 10, 40, shortstr(vhost) + shortstr("") + b"\x00"))
            return self.read_method()
        return m

    def close_ok(self):
        self.send(method_frame(0, 10, 51, b""))


def parse_close(m: Method) -> CloseInfo:
    assert m.name == (10, 50), f"expected connection.close, got {m.name}"
    code = struct.unpack_from(">H", m.args, 0)[0]
    n = m.args[2]
    text = m.args[3:3 + n].decode()
    class_id, method_id = struct.unpack_from(">HH", m.args, 3 + n)
    return CloseInfo(code, text, class_id, method_id)


def plain_response(user: str, password: str) -> bytes:
    return b"\x00" + user.encode() + b"\x00" + password.encode()


def amqplain_response(user: str, password: str) -> bytes:
    return table_items({"LOGIN": user, "PASSWORD": password})


def login(host: str, port: int, mechanism: str, response: bytes, vhost: str = "/",
          tls: ssl.SSLContext | None = None, server_hostname: str | None = None) -> Method:
    """Full handshake; returns the method that ends it (open-ok or connection.close)."""
    with RawAmqp.connect(host, port, tls=tls, server_hostname=server_hostname) as c:
        c.start()
        c.start_ok(mechanism, response)
        m = c.after_auth(vhost)
        if m.name == (10, 41):
            # Close politely so the broker does not log an abrupt disconnect.
            c.send(method_frame(0, 10, 50, struct.pack(">H", 200) + shortstr("bye")
                                + struct.pack(">HH", 0, 0)))
            try:
                c.read_method()
            except Closed:
                pass
        return m
