"""Start, stop and locate a FerryMQ broker for end-to-end tests.

Used by tests/e2e/conftest.py, tests/kafka/conftest.py, tests/security/conftest.py and
tests/kombu/run_kombu.py.

Environment:
  FERRYMQ_TEST_AMQP_URL  use this already-running broker (e.g. RabbitMQ at
                         amqp://guest:guest@127.0.0.1:5673/%2f) instead of
                         starting FerryMQ.
  FERRYMQ_TEST_KAFKA_BOOTSTRAP  the same for the Kafka suite: HOST:PORT of an
                         already-running Kafka-protocol broker.
  FERRYMQ_BIN            path of the ferrymq binary
                         (default <repo>/target/release/ferrymq).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "release" / "ferrymq"
# `ferrymq: <listener> listening on <addr>:<port>`; addr may be an IPv6 literal. Listener
# names: amqp, kafka, http, prometheus, and with a TLS certificate amqps, kafka-tls and https.
LISTEN_RE = re.compile(r"ferrymq: ([a-z][a-z0-9-]*) listening on (\S+):(\d+)\s*$")
# The TLS listeners open only with both --tls-cert-file and --tls-key-file; the harness then
# asks for port 0 on each, unless the caller chose a port.
TLS_PORT_FLAGS = {"amqps": "--amqps-port", "kafka-tls": "--kafka-tls-port",
                  "https": "--https-port"}


def external_url() -> str | None:
    url = os.environ.get("FERRYMQ_TEST_AMQP_URL", "").strip()
    return url or None


def external_kafka_bootstrap() -> str | None:
    bootstrap = os.environ.get("FERRYMQ_TEST_KAFKA_BOOTSTRAP", "").strip()
    return bootstrap or None


def resolve_binary(path: str | os.PathLike) -> Path:
    """Absolute path of the binary: relative paths are taken from the current
    directory (the broker runs with its cwd in a temp dir), bare names from PATH."""
    s = os.fspath(path)
    if os.sep not in s:
        found = shutil.which(s)
        if found:
            return Path(found)
    return Path(s).expanduser().resolve()


def broker_binary() -> Path:
    return resolve_binary(os.environ.get("FERRYMQ_BIN") or DEFAULT_BIN)


class BrokerStartError(RuntimeError):
    pass


class Broker:
    """A FerryMQ process on a data directory that survives restarts.

    start() launches `ferrymq serve --data-dir DIR --amqp-port 0 --kafka-port 0
    ...`, waits for the `ferrymq: amqp listening on HOST:PORT` line (and, with
    kafka=True, for `ferrymq: kafka listening on HOST:PORT` too; with http=True for
    the `http` line, and `https` too with a certificate) and keeps
    draining the output in a thread (also appended to DIR/../ferrymq.log). stop() sends SIGTERM
    (then SIGKILL), kill9() sends SIGKILL. Both keep the data dir, so a
    following start() restarts the broker on the same data. cleanup() stops
    the broker and removes the directory if this object created it.

    extra_args go after the harness's own flags (a later flag wins); it is a plain
    list, so a test may edit it between restarts (e.g. drop --load-definitions).
    When extra_args (or env) configure a TLS certificate (--tls-cert-file), the
    harness also passes `--amqps-port 0 --kafka-tls-port 0 --https-port 0` (unless
    extra_args choose those ports) and waits for the `amqps` line (and `kafka-tls`
    with kafka=True). `listeners` overrides the set of listener lines to wait for.
    After start(), `ports` maps every reported listener name to its port
    (`amqps_port`, `kafka_tls_port` are shortcuts) and `addresses` to the
    (address, port) it printed. `env` adds variables to the broker's environment.
    """

    def __init__(self, binary: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None,
                 extra_args: list[str] | tuple[str, ...] = (),
                 amqp_port: int = 0,
                 start_timeout: float = 30.0,
                 kafka: bool = False,
                 kafka_port: int = 0,
                 env: dict[str, str] | None = None,
                 listeners: list[str] | tuple[str, ...] | set[str] | None = None,
                 http: bool = False):
        self.binary = resolve_binary(binary) if binary else broker_binary()
        self._own_dir = data_dir is None
        if data_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="ferrymq-e2e-"))
            self.data_dir = self.base_dir / "data"
        else:
            self.data_dir = Path(data_dir)
            self.base_dir = self.data_dir.parent
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base_dir / "ferrymq.log"
        self.extra_args = list(extra_args)
        self.amqp_port_arg = amqp_port
        self.kafka = kafka
        self.kafka_port_arg = kafka_port
        self.kafka_port: int | None = None
        self.env = dict(env or {})
        self.listeners = set(listeners) if listeners is not None else None
        self.http = http
        self.ports: dict[str, int] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        self.start_timeout = start_timeout
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._drain: threading.Thread | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=200)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ info
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("broker not started")
        return f"amqp://guest:guest@{self.host}:{self.port}/%2f"

    def url_for(self, user: str = "guest", password: str = "guest", vhost: str = "/",
                host: str | None = None) -> str:
        """amqp:// URL of the AMQP listener for another user, vhost or host address."""
        if self.port is None:
            raise RuntimeError("broker not started")
        q = urllib.parse.quote
        return (f"amqp://{q(user, safe='')}:{q(password, safe='')}@{host or self.host}:"
                f"{self.port}/{q(vhost, safe='')}")

    @property
    def kafka_bootstrap(self) -> str:
        """"127.0.0.1:PORT" of the Kafka listener (loopback whatever it bound)."""
        if self.kafka_port is None:
            raise RuntimeError("kafka listener not started (Broker(kafka=True))")
        return f"{self.host}:{self.kafka_port}"

    @property
    def amqps_port(self) -> int | None:
        return self.ports.get("amqps")

    @property
    def kafka_tls_port(self) -> int | None:
        return self.ports.get("kafka-tls")

    @property
    def kafka_tls_bootstrap(self) -> str:
        if self.kafka_tls_port is None:
            raise RuntimeError("kafka-tls listener not started (TLS certificate and kafka=True)")
        return f"{self.host}:{self.kafka_tls_port}"

    @property
    def http_url(self) -> str:
        """"http://127.0.0.1:PORT" of the management API (Broker(http=True))."""
        if "http" not in self.ports:
            raise RuntimeError("http listener not started (Broker(http=True))")
        return f"http://{self.host}:{self.ports['http']}"

    @property
    def prometheus_url(self) -> str:
        """"http://127.0.0.1:PORT" of the Prometheus metrics listener (no authentication).
        Unless the broker was started with http=True, start() did not wait for this
        listener: wait here for its report (it comes just after the others')."""
        deadline = time.monotonic() + self.start_timeout
        while "prometheus" not in self.ports:
            if time.monotonic() > deadline or self.proc is None or self.proc.poll() is not None:
                raise RuntimeError("prometheus listener not reported")
            time.sleep(0.05)
        return f"http://{self.host}:{self.ports['prometheus']}"

    @property
    def https_port(self) -> int | None:
        return self.ports.get("https")

    @property
    def tls(self) -> bool:
        """Whether the arguments or environment configure a TLS certificate."""
        return "--tls-cert-file" in self.extra_args or any(
            a.startswith("--tls-cert-file=") for a in self.extra_args) or bool(
            self.env.get("FERRYMQ_TLS_CERT_FILE"))

    def wanted_listeners(self) -> set[str]:
        if self.listeners is not None:
            return set(self.listeners)
        wanted = {"amqp", "kafka"} if self.kafka else {"amqp"}
        if self.tls:
            wanted |= {"amqps", "kafka-tls"} if self.kafka else {"amqps"}
        if self.http:
            wanted |= {"http", "https", "prometheus"} if self.tls else {"http", "prometheus"}
        return wanted

    def output_tail(self, n: int = 60) -> str:
        with self._lock:
            return "".join(list(self._tail)[-n:])

    # ------------------------------------------------------------- lifecycle
    def command(self, amqp_port: int | None = None,
                kafka_port: int | None = None,
                tls_ports: dict[str, int] | None = None) -> list[str]:
        port = self.amqp_port_arg if amqp_port is None else amqp_port
        kport = self.kafka_port_arg if kafka_port is None else kafka_port
        tls_args: list[str] = []
        if self.tls:
            for name, flag in TLS_PORT_FLAGS.items():
                if flag in self.extra_args or any(a.startswith(flag + "=")
                                                  for a in self.extra_args):
                    continue
                tls_args += [flag, str((tls_ports or {}).get(name, 0))]
        return [str(self.binary), "serve",
                "--data-dir", str(self.data_dir),
                "--amqp-port", str(port),
                "--kafka-port", str(kport), "--http-port", "0",
                "--prometheus-port", "0",
                *tls_args,
                *self.extra_args]

    def process_env(self) -> dict[str, str] | None:
        if not self.env:
            return None
        env = dict(os.environ)
        env.update(self.env)
        return env

    def run_to_exit(self, timeout: float = 30.0) -> tuple[int | None, str]:
        """Run the broker command in the foreground (for startup failures): returns
        (exit code, output), or (None, output so far) if it is still running after
        `timeout` seconds (then it is killed)."""
        if self.running:
            raise RuntimeError("broker already running")
        cmd = self.command()
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, cwd=str(self.base_dir),
                               env=self.process_env(), timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = e.stdout or b""
            return None, out.decode("utf-8", "replace")
        return r.returncode, r.stdout.decode("utf-8", "replace")

    def send_signal(self, sig: int) -> None:
        """Signal the broker process (e.g. SIGHUP to reload certificates)."""
        if not self.running:
            raise RuntimeError("broker not running")
        self.proc.send_signal(sig)

    def start(self, same_port: bool = False) -> "Broker":
        """Start (or restart) on the data dir. same_port=True reuses the AMQP
        (and Kafka) port of the previous run, so clients can reconnect to the
        old URL / bootstrap address."""
        if self.running:
            raise RuntimeError("broker already running")
        if not self.binary.exists():
            raise BrokerStartError(
                f"FerryMQ binary not found at {self.binary} (build it with "
                f"`cargo build --release`, set FERRYMQ_BIN, or set "
                f"FERRYMQ_TEST_AMQP_URL to test an external broker)")
        cmd = self.command(
            self.port if (same_port and self.port) else None,
            self.kafka_port if (same_port and self.kafka_port) else None,
            {k: v for k, v in self.ports.items() if k in TLS_PORT_FLAGS} if same_port else None)
        log = open(self.log_path, "ab", buffering=0)
        log.write(f"==== start {' '.join(cmd)}\n".encode())
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=str(self.base_dir),
                env=self.process_env(), start_new_session=True)
        except OSError as e:
            log.close()
            raise BrokerStartError(f"cannot run {self.binary}: {e}") from e
        found: dict[str, tuple[str, int]] = {}
        self.addresses = {}
        self.ports = {}
        wanted = self.wanted_listeners()
        ready = threading.Event()

        def drain(proc=self.proc):
            try:
                for raw in iter(proc.stdout.readline, b""):
                    log.write(raw)
                    line = raw.decode("utf-8", "replace")
                    with self._lock:
                        self._tail.append(line)
                    m = LISTEN_RE.search(line)
                    if m:
                        # Recorded even after start() returned: a listener that is not
                        # waited for still shows up in `ports` once it reports.
                        with self._lock:
                            found[m.group(1)] = (m.group(2), int(m.group(3)))
                            self.addresses[m.group(1)] = found[m.group(1)]
                            self.ports[m.group(1)] = int(m.group(3))
                        if wanted <= found.keys():
                            ready.set()
                    elif not ready.is_set() and "kafka" in wanted \
                            and "kafka listener not available" in line:
                        ready.set()  # fail fast: this build has no Kafka listener
            finally:
                ready.set()
                log.close()

        self._drain = threading.Thread(target=drain, name="ferrymq-stdout", daemon=True)
        self._drain.start()
        ready.wait(self.start_timeout)
        missing = sorted(wanted - found.keys())
        if missing:
            rc = self.proc.poll()
            if rc is None and not self._drain.is_alive():
                try:  # output ended: the process is exiting, report its code
                    rc = self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            self._terminate()
            lines = ", ".join(f"'ferrymq: {p} listening on HOST:PORT'" for p in missing)
            raise BrokerStartError(
                f"ferrymq did not report {lines} within "
                f"{self.start_timeout}s (exit code {rc}); output:\n{self.output_tail()}")
        # Connect on loopback whatever it bound.
        self.port = found["amqp"][1] if "amqp" in found else None
        self.kafka_port = found["kafka"][1] if "kafka" in found else None
        return self

    def _terminate(self, sig=signal.SIGTERM, timeout: float = 10.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
        if self._drain is not None:
            self._drain.join(5)
        self.proc = None
        self._drain = None
        return proc.returncode

    def stop(self, timeout: float = 10.0) -> int | None:
        """Graceful stop: SIGTERM, then SIGKILL after `timeout` seconds."""
        return self._terminate(signal.SIGTERM, timeout)

    def kill9(self) -> int | None:
        """Crash stop: SIGKILL, no chance to flush anything."""
        return self._terminate(signal.SIGKILL, 10.0)

    def restart(self, crash: bool = False, same_port: bool = False) -> "Broker":
        self.kill9() if crash else self.stop()
        return self.start(same_port=same_port)

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


class ExternalKafkaBroker:
    """An already running Kafka-protocol broker given as HOST:PORT."""

    def __init__(self, bootstrap: str):
        self.kafka_bootstrap = bootstrap
        host, _, port = bootstrap.rpartition(":")
        self.host = host or "127.0.0.1"
        self.kafka_port = int(port)

    running = True

    def stop(self, *a, **k):
        pass

    cleanup = stop


class ExternalBroker:
    """An already running broker given by URL (RabbitMQ, or a FerryMQ you started)."""

    def __init__(self, url: str):
        self.url = url
        parsed = urllib.parse.urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 5672

    running = True

    def stop(self, *a, **k):
        pass

    cleanup = stop


def wait_port_closed(host: str, port: int, timeout: float = 10.0) -> bool:
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), 0.2):
                pass
        except OSError:
            return True
        time.sleep(0.05)
    return False
