"""Raw Kafka protocol requests for SASL edge cases no client library sends on purpose:
unknown mechanisms, requests before authentication, garbage tokens, SCRAM with a wrong
nonce or proof. Only non-flexible request versions (header v1, response header v0):
ApiVersions v0, Metadata v1, ListGroups v0, SaslHandshake v1, SaslAuthenticate v1.
Also a SCRAM-SHA-256/512 client (RFC 5802/7677, as KIP-84 uses it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
from dataclasses import dataclass

API_METADATA = 3
API_LIST_GROUPS = 16
API_SASL_HANDSHAKE = 17
API_API_VERSIONS = 18
API_SASL_AUTHENTICATE = 36

UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30


class Disconnected(Exception):
    pass


def _str(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _bytes(b: bytes | None) -> bytes:
    if b is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(b)) + b


class Reader:
    def __init__(self, buf: bytes):
        self.buf = buf
        self.i = 0

    def int8(self):
        v = struct.unpack_from(">b", self.buf, self.i)[0]
        self.i += 1
        return v

    def int16(self):
        v = struct.unpack_from(">h", self.buf, self.i)[0]
        self.i += 2
        return v

    def int32(self):
        v = struct.unpack_from(">i", self.buf, self.i)[0]
        self.i += 4
        return v

    def int64(self):
        v = struct.unpack_from(">q", self.buf, self.i)[0]
        self.i += 8
        return v

    def string(self):
        n = self.int16()
        if n < 0:
            return None
        v = self.buf[self.i:self.i + n].decode()
        self.i += n
        return v

    def bytes_(self):
        n = self.int32()
        if n < 0:
            return None
        v = self.buf[self.i:self.i + n]
        self.i += n
        return v

    def array(self, item):
        n = self.int32()
        if n < 0:
            return None
        return [item() for _ in range(n)]


@dataclass
class AuthResult:
    error_code: int
    error_message: str | None
    auth_bytes: bytes
    session_lifetime_ms: int


class KafkaWire:
    def __init__(self, host: str, port: int, timeout: float = 10.0,
                 client_id: str = "ferrymq-security-tests"):
        self.sock = socket.create_connection((host, port), timeout)
        self.sock.settimeout(timeout)
        self.client_id = client_id
        self.corr = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            try:
                chunk = self.sock.recv(n - len(out))
            except (ConnectionResetError, BrokenPipeError) as e:
                raise Disconnected(repr(e)) from e
            if not chunk:
                raise Disconnected("EOF")
            out += chunk
        return out

    def send_raw(self, data: bytes):
        try:
            self.sock.sendall(data)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Disconnected(repr(e)) from e

    def request(self, api_key: int, version: int, body: bytes) -> Reader:
        """Send one request (header v1) and read its response (header v0)."""
        self.corr += 1
        payload = struct.pack(">hhi", api_key, version, self.corr) + _str(self.client_id) + body
        self.send_raw(struct.pack(">i", len(payload)) + payload)
        size = struct.unpack(">i", self._recv_exact(4))[0]
        resp = self._recv_exact(size)
        corr = struct.unpack_from(">i", resp, 0)[0]
        assert corr == self.corr, f"correlation id {corr} != {self.corr}"
        r = Reader(resp)
        r.i = 4
        return r

    def is_disconnected(self, timeout: float = 5.0) -> bool:
        """True if the server closes the socket within `timeout` (nothing more to read)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False

    # -- APIs
    def api_versions(self) -> dict[int, tuple[int, int]]:
        r = self.request(API_API_VERSIONS, 0, b"")
        err = r.int16()
        assert err == 0, f"ApiVersions error {err}"
        keys = r.array(lambda: (r.int16(), r.int16(), r.int16()))
        return {k: (lo, hi) for k, lo, hi in keys}

    def sasl_handshake(self, mechanism: str) -> tuple[int, list[str]]:
        r = self.request(API_SASL_HANDSHAKE, 1, _str(mechanism))
        err = r.int16()
        mechs = r.array(r.string) or []
        return err, mechs

    def sasl_authenticate(self, auth_bytes: bytes) -> AuthResult:
        r = self.request(API_SASL_AUTHENTICATE, 1, _bytes(auth_bytes))
        err = r.int16()
        msg = r.string()
        data = r.bytes_() or b""
        lifetime = r.int64()
        return AuthResult(err, msg, data, lifetime)

    def metadata_all(self) -> list[tuple[int, str]]:
        """Metadata v1 for all topics: [(error_code, name)]."""
        r = self.request(API_METADATA, 1, struct.pack(">i", -1))
        r.array(lambda: (r.int32(), r.string(), r.int32(), r.string()))  # brokers
        r.int32()  # controller id

        def partition():
            r.int16(), r.int32(), r.int32()
            r.array(r.int32)
            r.array(r.int32)

        def topic():
            err = r.int16()
            name = r.string()
            r.int8()  # is_internal
            r.array(partition)
            return err, name
        return r.array(topic) or []

    def list_groups(self) -> int:
        r = self.request(API_LIST_GROUPS, 0, b"")
        return r.int16()

    # -- whole exchanges
    def plain(self, user: str, password: str, authzid: str = "") -> AuthResult:
        err, mechs = self.sasl_handshake("PLAIN")
        assert err == 0, f"SaslHandshake PLAIN: error {err}, mechanisms {mechs}"
        return self.sasl_authenticate(f"{authzid}\0{user}\0{password}".encode())

    def scram(self, mechanism: str, user: str, password: str, *,
              tamper_nonce: bool = False, tamper_proof: bool = False) -> AuthResult:
        """A whole SCRAM exchange. Returns the result of the final SaslAuthenticate (or
        of the first, if that one already failed). On success the server signature is
        checked."""
        err, mechs = self.sasl_handshake(mechanism)
        assert err == 0, f"SaslHandshake {mechanism}: error {err}, mechanisms {mechs}"
        client = ScramClient(mechanism, user, password)
        first = self.sasl_authenticate(client.first())
        if first.error_code != 0:
            return first
        final = client.final(first.auth_bytes, tamper_nonce=tamper_nonce,
                             tamper_proof=tamper_proof)
        res = self.sasl_authenticate(final)
        if res.error_code == 0:
            client.verify_server(res.auth_bytes)
        return res


# ------------------------------------------------------------------------- SCRAM

def saslname(user: str) -> str:
    return user.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    def __init__(self, mechanism: str, user: str, password: str, nonce: str | None = None):
        self.hash = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}[mechanism]
        self.hname = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
        self.user = user
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode().replace("=", "")
        self.client_first_bare = f"n={saslname(user)},r={self.nonce}"
        self.server_signature = None

    def first(self) -> bytes:
        return ("n,," + self.client_first_bare).encode()

    def _hmac(self, key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, self.hash).digest()

    def final(self, server_first: bytes, tamper_nonce=False, tamper_proof=False) -> bytes:
        sf = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in sf.split(","))
        nonce, salt, iters = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        assert nonce.startswith(self.nonce), "server nonce must extend the client nonce"
        if tamper_nonce:
            nonce = nonce + "X"
        without_proof = f"c=biws,r={nonce}"
        salted = hashlib.pbkdf2_hmac(self.hname, self.password.encode(), salt, iters)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = self.hash(client_key).digest()
        auth_message = f"{self.client_first_bare},{sf},{without_proof}".encode()
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        if tamper_proof:
            proof = bytes([proof[0] ^ 0xFF]) + proof[1:]
        server_key = self._hmac(salted, b"Server Key")
        self.server_signature = self._hmac(server_key, auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server(self, server_final: bytes) -> None:
        attrs = dict(kv.split("=", 1) for kv in server_final.decode().split(","))
        assert "e" not in attrs, f"server-final error {attrs['e']}"
        assert base64.b64decode(attrs["v"]) == self.server_signature, \
            "server signature does not verify"
