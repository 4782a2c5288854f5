"""Fixtures for the FerryMQ security suite (users, vhosts, permissions, TLS, Kafka SASL).

Every test starts its own FerryMQ (FERRYMQ_BIN, default target/release/ferrymq) with a
fresh data dir and port 0 through tests/e2e/ferrybroker.py, configured by flags and a
RabbitMQ definitions file. The suite cannot run against an external broker: with
FERRYMQ_TEST_AMQP_URL or FERRYMQ_TEST_KAFKA_BOOTSTRAP set it is skipped.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pika
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from ferrybroker import (  # noqa: E402
    Broker,
    BrokerStartError,
    external_kafka_bootstrap,
    external_url,
)

import sechelpers as sh  # noqa: E402
from pki import CA  # noqa: E402


@pytest.fixture
def make_broker(tmp_path):
    """Factory: `b = make_broker(*args, defs=..., kafka=..., tls=..., verify_peer=...,
    env=...)` builds (does not start) a FerryMQ with its own data dir. `defs` (a dict or
    a JSON string) is written to a file passed with --load-definitions; `tls` is a
    TlsFiles (certificate, key and CA flags); verify_peer=True adds --tls-verify-peer.
    Positional args are more broker flags. All are stopped and removed at teardown."""
    if external_url() or external_kafka_bootstrap():
        pytest.skip("the security suite starts its own brokers (unset FERRYMQ_TEST_*)")
    made: list[Broker] = []
    counter = iter(range(1000))

    def make(*args: str, defs=None, kafka: bool = False, tls: "TlsFiles | None" = None,
             verify_peer: bool = False, env: dict | None = None, **kwargs) -> Broker:
        extra = list(args)
        if defs is not None:
            path = sh.write_definitions(tmp_path / f"defs{next(counter)}", defs)
            extra += ["--load-definitions", str(path)]
        if tls is not None:
            extra += tls.args()
        if verify_peer:
            extra += ["--tls-verify-peer"]
        b = Broker(extra_args=extra, kafka=kafka, env=env, **kwargs)
        made.append(b)
        return b

    yield make
    for b in made:
        b.cleanup()


@pytest.fixture
def start_broker(make_broker):
    """Like make_broker, but started: `b = start_broker(...)`; a broker that does not
    come up fails the test with its output."""
    def start(*args, **kwargs) -> Broker:
        b = make_broker(*args, **kwargs)
        try:
            b.start()
        except BrokerStartError as e:
            pytest.fail(str(e), pytrace=False)
        return b
    return start


@pytest.fixture
def connect():
    """Factory: connect(port, user, password, vhost_="/", host=..., ssl_options=...,
    credentials=...) -> BlockingConnection; all closed at teardown."""
    conns: list[pika.BlockingConnection] = []

    def make(port: int, user: str = "guest", password: str = "guest", vhost_: str = "/",
             **kw) -> pika.BlockingConnection:
        c = pika.BlockingConnection(sh.params(port, user, password, vhost_, **kw))
        conns.append(c)
        return c

    yield make
    for c in conns:
        try:
            if c.is_open:
                c.close()
        except Exception:
            pass


# ----------------------------------------------------------------------------- TLS

class TlsFiles:
    """Server certificate, key and CA for a broker: args() are the broker flags."""

    def __init__(self, ca: CA, server, ca_file: Path | None = None):
        self.ca = ca
        self.server = server
        self.ca_file = ca_file if ca_file is not None else ca.cert_path

    def args(self) -> list[str]:
        a = ["--tls-cert-file", str(self.server.cert), "--tls-key-file", str(self.server.key)]
        if self.ca_file is not None:
            a += ["--tls-ca-file", str(self.ca_file)]
        return a


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A session CA with a server certificate (SAN 127.0.0.1, localhost), client
    certificates CN=alice, CN=mallory, and a second, unrelated CA."""
    d = tmp_path_factory.mktemp("pki")
    ca = CA(d / "ca")
    other = CA(d / "other", cn="Some Other CA")
    return {
        "ca": ca,
        "server": ca.server(),
        "alice": ca.client("alice"),
        "mallory": ca.client("mallory"),
        "other_ca": other,
        "other_alice": other.client("alice"),
    }


@pytest.fixture
def tls(pki):
    return TlsFiles(pki["ca"], pki["server"])


# ------------------------------------------------------------- non-loopback address

DUMMY_IF = "ferrytest0"
DUMMY_ADDR = "10.213.0.1"


def _usable(ip: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


def _first_non_loopback_ipv4() -> str | None:
    if shutil.which("ip"):
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                             text=True).stdout
        for m in re.finditer(r"\binet (\d+\.\d+\.\d+\.\d+)/", out):
            ip = m.group(1)
            if not ipaddress.ip_address(ip).is_loopback and _usable(ip):
                return ip
    # Without iproute2: the source address the kernel would pick (no packet is sent).
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            ip = s.getsockname()[0]
        if not ipaddress.ip_address(ip).is_loopback and _usable(ip):
            return ip
    except OSError:
        pass
    return None


@pytest.fixture(scope="session")
def external_ip():
    """An IPv4 address of this host that is not loopback: a connection from this host to
    it has that address as its peer address, so the broker must treat it as remote. The
    first such address of `ip -4 addr`, or one on a dummy interface created for the
    session (root only; removed at the end)."""
    ip = _first_non_loopback_ipv4()
    if ip:
        yield ip
        return
    created = False
    if shutil.which("ip"):
        subprocess.run(["ip", "link", "del", DUMMY_IF], capture_output=True)  # a leftover
        cmds = [["ip", "link", "add", DUMMY_IF, "type", "dummy"],
                ["ip", "addr", "add", f"{DUMMY_ADDR}/32", "dev", DUMMY_IF],
                ["ip", "link", "set", DUMMY_IF, "up"]]
        created = all(subprocess.run(c, capture_output=True).returncode == 0 for c in cmds)
    if not created or not _usable(DUMMY_ADDR):
        subprocess.run(["ip", "link", "del", DUMMY_IF], capture_output=True)
        pytest.skip("no non-loopback IPv4 address on this host and cannot create one "
                    f"(needs root and iproute2: ip link add {DUMMY_IF} type dummy)")
    try:
        yield DUMMY_ADDR
    finally:
        subprocess.run(["ip", "link", "del", DUMMY_IF], capture_output=True)


@pytest.fixture
def admin_and_plain(start_broker):
    """A broker with Kafka on and two users with full permissions on `/`: `admin`
    (administrator, password admin-pw) and `plain` (no tags, plain-pw)."""
    defs = sh.definitions(
        users=[sh.user("admin", "admin-pw", tags=["administrator"]),
               sh.user("plain", "plain-pw")],
        vhosts=[sh.vhost("/")],
        permissions=[sh.perm("admin", "/"), sh.perm("plain", "/")])
    return start_broker(defs=defs, kafka=True)
