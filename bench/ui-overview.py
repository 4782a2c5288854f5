"""How long the web UI's overview page (and the queues page) takes to load with 10 000
queues, in headless Chromium (Debian's chromium + chromedriver, Selenium), FerryMQ and,
with --rabbitmq, RabbitMQ 3.10's management UI side by side in the same run.

    FERRYMQ_BIN=target/release/ferrymq .venv/bin/python bench/ui-overview.py \
        [--queues 10000] [--runs 5] [--rabbitmq] > bench/results/2026-12-07-ui-overview.txt

A load is a fresh navigation (new document, logged in through the UI's own session
storage or cookie): the time from navigation start until the page shows its numbers
(FerryMQ: the first overview refresh rendered, `window.ferrymqOverviewLoaded`; the
queues page: its first page of rows, `window.ferrymqListLoaded`; RabbitMQ: the
overview's totals table and the queues table filled in). Best and median of the runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pika
import requests
from selenium.webdriver.common.by import By

repo = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(repo / "tests" / "ui"))

from conftest import Broker, Ui, chrome  # noqa: E402


def declare(url: str, n: int, prefix: str = "perf."):
    c = pika.BlockingConnection(pika.URLParameters(url))
    ch = c.channel()
    for i in range(n):
        ch.queue_declare(f"{prefix}{i:05d}", durable=False)
    c.close()


def timed_loads(driver, url: str, probe: str, runs: int, ready_js: str | None = None):
    out = []
    for _ in range(runs):
        driver.get("about:blank")
        driver.get(url)
        deadline = time.monotonic() + 60
        v = None
        while time.monotonic() < deadline:
            v = driver.execute_script(probe)
            if v:
                break
            time.sleep(0.01)
        if not v:
            raise RuntimeError(f"{url}: page did not finish loading")
        out.append(float(v))
    return out


def fmt(name: str, ms: list[float]) -> str:
    return (f"{name:<48} best {min(ms):7.0f} ms   median {statistics.median(ms):7.0f} ms   "
            f"runs {', '.join(f'{x:.0f}' for x in ms)}")


def ferrymq(args, lines):
    b = Broker(http=True)
    b.start()
    try:
        t = time.monotonic()
        declare(b.url, args.queues)
        lines.append(f"FerryMQ: {args.queues} queues declared in {time.monotonic() - t:.1f} s (pika)")
        time.sleep(6)  # one sampler tick with every queue in it
        d = chrome(1400, 1000)
        try:
            ui = Ui(d, b.http_url)
            ui.logged_in()
            base = b.http_url
            ov = timed_loads(d, base + "/#/", "return window.ferrymqOverviewLoaded", args.runs)
            qs = timed_loads(d, base + "/#/queues", "return window.ferrymqListLoaded", args.runs)
            d.get(base + "/#/queues")
            ui.wait_text("#list-queues .pageinfo", lambda s: "page 1 of" in s)
            info = ui.text("#list-queues .pageinfo")
        finally:
            d.quit()
        lines.append(fmt("FerryMQ overview page (/#/)", ov))
        lines.append(fmt("FerryMQ queues page (/#/queues, first 50 rows)", qs))
        lines.append(f"  queues page shows: {info}")
        return ov, qs
    finally:
        b.cleanup()


def rabbitmq(args, lines):
    """RabbitMQ 3.10 (Debian's) with its management plugin on free ports."""
    tmp = Path(tempfile.mkdtemp(prefix="rmq-ui-"))
    (tmp / "mnesia").mkdir()
    (tmp / "log").mkdir()
    env = dict(os.environ,
               RABBITMQ_NODENAME="ferrybench@localhost", RABBITMQ_NODE_PORT="5699",
               RABBITMQ_DIST_PORT="25699", RABBITMQ_MNESIA_BASE=str(tmp / "mnesia"),
               RABBITMQ_LOG_BASE=str(tmp / "log"), RABBITMQ_ENABLED_PLUGINS_FILE=str(tmp / "plugins"),
               RABBITMQ_CONFIG_FILE=str(tmp / "rabbitmq"))
    (tmp / "plugins").write_text("[rabbitmq_management].\n")
    (tmp / "rabbitmq.conf").write_text("management.tcp.port = 15699\nloopback_users = none\n")
    # Debian's /usr/sbin wrapper switches to the rabbitmq user; the real script runs as us.
    server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    if not os.access(server, os.X_OK):
        server = shutil.which("rabbitmq-server") or "rabbitmq-server"
    env["RABBITMQ_PID_FILE"] = str(tmp / "pid")
    p = subprocess.Popen([server], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = "http://127.0.0.1:15699"
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(base + "/api/overview", auth=("guest", "guest"), timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("RabbitMQ did not start")
            time.sleep(0.5)
        version = requests.get(base + "/api/overview", auth=("guest", "guest")).json()["rabbitmq_version"]
        t = time.monotonic()
        declare("amqp://guest:guest@127.0.0.1:5699/%2F", args.queues)
        lines.append(f"RabbitMQ {version}: {args.queues} queues declared in {time.monotonic() - t:.1f} s (pika)")
        time.sleep(10)  # let the management database take in the queues
        d = chrome(1400, 1000)
        try:
            d.get(base + "/")
            d.find_element(By.NAME, "username").send_keys("guest")
            d.find_element(By.NAME, "password").send_keys("guest")
            d.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
            time.sleep(2)
            # The overview is loaded when its object totals show the queue count.
            ov = timed_loads(d, base + "/#/", (
                "const t = (document.querySelector('#main') || {}).textContent || '';"
                f"return t.replace(/[^A-Za-z0-9]/g, '').includes('Queues{args.queues}') "
                "? performance.now() : null"), args.runs)
            qs = timed_loads(d, base + "/#/queues", (
                "return document.querySelectorAll('#main table.list tbody tr').length >= 20 "
                "? performance.now() : null"), args.runs)
        finally:
            d.quit()
        lines.append(fmt(f"RabbitMQ {version} overview page (/#/)", ov))
        lines.append(fmt(f"RabbitMQ {version} queues page (/#/queues)", qs))
    finally:
        ctl = "/usr/lib/rabbitmq/bin/rabbitmqctl"
        if not os.access(ctl, os.X_OK):
            ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
        subprocess.run([ctl, "-n", "ferrybench@localhost", "stop"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queues", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rabbitmq", action="store_true", help="measure RabbitMQ's management UI too")
    args = ap.parse_args()
    lines = [f"# UI page load with {args.queues} queues, headless Chromium "
             f"({subprocess.run(['chromium', '--version'], capture_output=True, text=True).stdout.strip()}), "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
             f"{os.cpu_count()} CPUs (shared)"]
    ferrymq(args, lines)
    if args.rabbitmq:
        try:
            rabbitmq(args, lines)
        except Exception as e:  # the peer is optional; say why it is missing
            lines.append(f"RabbitMQ: not measured ({e})")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
