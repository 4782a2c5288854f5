"""Run kombu's own py-amqp integration tests against a broker.

Called by tests/kombu/run.sh inside the project venv. Steps:
  1. get the kombu sdist (pinned in requirements.txt; cached in .venv/cache),
     which ships t/integration/;
  2. start a FerryMQ broker like tests/e2e does (FERRYMQ_BIN, port from its
     `amqp listening on HOST:PORT` line), or use FERRYMQ_TEST_AMQP_URL;
  3. run `pytest t/integration/test_py_amqp.py` with RABBITMQ_HOST and
     RABBITMQ_5672_TCP pointing at it (that is how kombu's tests find the
     broker; they connect as guest/guest to vhost /), minus the node ids listed
     in tests/kombu/deselect.txt (unless KOMBU_NO_DESELECT=1).

Environment: FERRYMQ_TEST_AMQP_URL, FERRYMQ_BIN, KOMBU_NO_DESELECT=1,
KOMBU_RERUNS=1 (honour kombu's flaky(reruns=5) marks; off by default so a
broker bug cannot hide behind a rerun), KOMBU_TEST_TIMEOUT (s per test).
Extra command line arguments go to pytest.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from ferrybroker import Broker, BrokerStartError, ExternalBroker, external_url  # noqa: E402

TEST_FILES = ["t/integration/test_py_amqp.py"]


def kombu_version() -> str:
    for line in (HERE / "requirements.txt").read_text().splitlines():
        m = re.match(r"\s*kombu==(\S+)", line)
        if m:
            return m.group(1)
    raise SystemExit("no kombu==VERSION pin in tests/kombu/requirements.txt")


def kombu_sdist(version: str) -> Path:
    cache = REPO / ".venv" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"kombu-{version}.tar.gz"
    if not sdist.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q",
                        "--disable-pip-version-check", "--no-deps",
                        "--no-binary", ":all:", f"kombu=={version}", "-d", str(cache)],
                       check=True)
    if not sdist.exists():
        raise SystemExit(f"pip download did not produce {sdist}")
    return sdist


def deselected() -> list[str]:
    if os.environ.get("KOMBU_NO_DESELECT") == "1":
        return []
    ids = []
    for line in (HERE / "deselect.txt").read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            ids.append(line)
    return ids


def reset_fixed_names(root: Path, url: str) -> None:
    """kombu's tests use fixed queue/exchange names on vhost / and some leave
    messages behind (e.g. unacked ones requeued at connection close), which
    breaks the next run against the same long-lived broker. Before running
    against an external broker, delete every name the test sources declare."""
    import urllib.parse

    import amqp

    src = "\n".join((root / f).read_text() for f in ["t/integration/common.py", *TEST_FILES])
    queues = set(re.findall(r"(?:Queue|SimpleQueue|SimpleBuffer)\(\s*'([^']+)'", src))
    exchanges = set(re.findall(r"Exchange\(\s*'([^']+)'", src))
    u = urllib.parse.urlparse(url)
    conn = amqp.Connection(host=f"{u.hostname or '127.0.0.1'}:{u.port or 5672}",
                           userid=urllib.parse.unquote(u.username or "guest"),
                           password=urllib.parse.unquote(u.password or "guest"),
                           virtual_host="/", connect_timeout=10)
    conn.connect()
    try:
        ch = conn.channel()
        for q in sorted(queues):
            ch.queue_delete(q)
        for x in sorted(exchanges):
            ch.exchange_delete(x)
    finally:
        conn.close()
    print(f"run_kombu: reset {len(queues)} queues and {len(exchanges)} exchanges "
          f"the tests use", flush=True)


def main(argv: list[str]) -> int:
    version = kombu_version()
    sdist = kombu_sdist(version)
    work = Path(tempfile.mkdtemp(prefix="ferrymq-kombu-"))
    broker = None
    try:
        with tarfile.open(sdist) as tf:
            try:
                tf.extractall(work, filter="data")
            except TypeError:  # Python without extraction filters
                tf.extractall(work)
        root = work / f"kombu-{version}"
        for f in TEST_FILES:
            if not (root / f).exists():
                raise SystemExit(f"{f} missing from the kombu {version} sdist")

        url = external_url()
        if url:
            broker = ExternalBroker(url)
            reset_fixed_names(root, url)
        else:
            broker = Broker()
            try:
                broker.start()
            except BrokerStartError as e:
                print(f"run_kombu: {e}", file=sys.stderr)
                return 2
        print(f"run_kombu: kombu {version} integration tests against "
              f"{broker.host}:{broker.port}", flush=True)

        env = dict(os.environ)
        env["RABBITMQ_HOST"] = "127.0.0.1" if broker.host in ("localhost", "0.0.0.0") else broker.host
        env["RABBITMQ_5672_TCP"] = str(broker.port)
        env.pop("PYTHONPATH", None)

        cmd = [sys.executable, "-m", "pytest", *TEST_FILES,
               "-p", "no:cacheprovider",
               "-W", "ignore::pytest.PytestUnknownMarkWarning",
               f"--timeout={os.environ.get('KOMBU_TEST_TIMEOUT', '120')}",
               "-rfE"]
        if os.environ.get("KOMBU_RERUNS") != "1":
            cmd += ["-p", "no:rerunfailures"]
        for node in deselected():
            cmd += ["--deselect", node]
        cmd += argv or ["-q"]
        # the sdist's setup.cfg is pytest's rootdir config (testpaths t/unit is
        # overridden by the explicit file); t/integration/__init__.py puts cwd
        # on sys.path
        rc = subprocess.run(cmd, cwd=root, env=env).returncode
        if rc != 0 and broker is not None and isinstance(broker, Broker):
            print("run_kombu: last broker output:\n" + broker.output_tail(40), file=sys.stderr)
        return rc
    finally:
        if broker is not None:
            broker.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
