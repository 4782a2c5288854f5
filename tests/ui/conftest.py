"""Fixtures for the web UI suite: one FerryMQ (ports 0, its own data dir, HTTP and Kafka
listeners) and one headless Chromium driven by Selenium for the whole module; tests use
names of their own so they do not see one another's objects.

FERRYMQ_BIN selects the broker binary (default <repo>/target/release/ferrymq);
CHROMIUM and CHROMEDRIVER the browser (default Debian's /usr/bin/chromium and
/usr/bin/chromedriver).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from ferrybroker import Broker  # noqa: E402,F401
from ferryfixtures import Api, broker_fixture, pika_factory, q, wait_until  # noqa: E402,F401


def chrome(width: int = 1400, height: int = 1000) -> webdriver.Chrome:
    """Debian's headless Chromium through its chromedriver (nothing downloaded)."""
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = (os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
                   or "/usr/bin/chromedriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)


class Ui:
    """The browser on one broker's UI, with the waits the tests need."""

    def __init__(self, driver: webdriver.Chrome, base: str):
        self.d = driver
        self.base = base

    def open(self, hash_path: str = "/"):
        self.d.get(f"{self.base}/#{hash_path}")

    def go(self, hash_path: str):
        """Navigates inside the page (no reload)."""
        self.d.execute_script("location.hash = arguments[0]", hash_path)

    def wait(self, pred, timeout: float = 15, what: str = "condition"):
        def safe(_):
            try:
                return pred()
            except StaleElementReferenceException:
                return False
        return WebDriverWait(self.d, timeout, poll_frequency=0.1).until(safe, message=what)

    def el(self, css: str, timeout: float = 15):
        return self.wait(lambda: (e := self.d.find_elements(By.CSS_SELECTOR, css)) and e[0].is_displayed() and e[0],
                         timeout, f"element {css}")

    def text(self, css: str) -> str:
        e = self.d.find_elements(By.CSS_SELECTOR, css)
        return e[0].text if e else ""

    def wait_text(self, css: str, pred, timeout: float = 15, what: str | None = None):
        return self.wait(lambda: pred(self.text(css)), timeout, what or f"text of {css}")

    def fill(self, css: str, value: str):
        e = self.el(css)
        e.clear()
        e.send_keys(value)

    def login(self, user: str = "guest", password: str = "guest"):
        self.d.get(self.base + "/")
        self.d.execute_script("sessionStorage.clear()")
        self.d.get(self.base + "/")
        self.fill("#login-user", user)
        self.fill("#login-pass", password)
        self.el("#login-submit").click()

    def logged_in(self):
        self.login()
        self.el("#shell")
        self.wait_text("#whoami", lambda t: t.startswith("guest"))

    def flash(self, contains: str):
        return self.wait(lambda: any(contains in e.text for e in self.d.find_elements(By.CSS_SELECTOR, ".flash")),
                         what=f"a message saying {contains!r}")

    def click_in_row(self, table_css: str, contains: str, css: str | None = None, link: str | None = None):
        """Clicks a link (by its text) or an element (by css) in the row that contains
        `contains`, retrying while a periodic refresh replaces the rows."""
        def attempt():
            r = self.row(table_css, contains)
            if r is None:
                return False
            e = r.find_element(By.LINK_TEXT, link) if link is not None else r.find_element(By.CSS_SELECTOR, css)
            e.click()
            return True
        self.wait(attempt, what=f"a row with {contains!r} in {table_css}")

    def accept_confirm(self):
        WebDriverWait(self.d, 5).until(lambda d: d.switch_to.alert).accept()

    def row(self, table_css: str, contains: str):
        """The first table row under table_css whose text contains `contains`."""
        for r in self.d.find_elements(By.CSS_SELECTOR, f"{table_css} tbody tr"):
            if contains in r.text:
                return r
        return None


@pytest.fixture(scope="module")
def broker():
    yield from broker_fixture(kafka=True)


@pytest.fixture(scope="module")
def driver():
    d = chrome()
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture
def ui(broker, driver) -> Ui:
    return Ui(driver, broker.http_url)


class UiHttp(Api):
    """The API as the tests drive it next to the page: PUT sends `{}` when given no body."""

    def put(self, path, body=None, **kw):
        return super().put(path, {} if body is None else body, **kw)


@pytest.fixture
def http(broker) -> UiHttp:
    return UiHttp(broker.http_url)


@pytest.fixture
def amqp(broker):
    yield from pika_factory(broker.url)
