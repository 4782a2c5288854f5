"""Fixtures for the power-cut suite: a work directory per test (mount points, backing
stores, materialised cuts, broker logs), removed when the test passes and kept (path
printed) when it fails."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config):
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        raise pytest.UsageError("the power-cut suite needs root and /dev/fuse (it mounts FUSE)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.failed_call = rep.failed


@pytest.fixture
def work(request):
    d = Path(tempfile.mkdtemp(prefix="ferrymq-powercut-"))
    yield d
    if getattr(request.node, "failed_call", False):
        print(f"\npower-cut work directory kept: {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)
