"""Power cuts under load on the real `ferrymq` binary.

The broker's data dir is on `ferrymq-powercut`, a FUSE file system that keeps what was
written but not fsynced apart and throws it away on a cut, directory entries included
until their parent directory is fsynced (POSIX's guarantee and no more). The clients
record every confirm and every acknowledged record; after the cut the broker is killed,
and restarted on exactly what was durable (mounted again from the materialised cut).
Every confirmed message and acknowledged record must be there, every declared queue and
created topic must exist, and the broker must boot.

`test_a_disk_that_drops_syncs_is_caught` shows the check can fail: the same run on a
mount that acknowledges some fsyncs without doing them must report losses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from powercut import (
    Ledger, Load, PowercutFs, check, cut_under_load, setup, start_broker,
)


class Run:
    """One machine's life: mounts, brokers, cuts; everything closed at the end."""

    def __init__(self, work: Path, lies: tuple[str, ...] = ()):
        self.work, self.lies = work, lies
        self.ledger = Ledger()
        self.n = 0
        self.fs: PowercutFs | None = None
        self.broker = None
        self.source: Path | None = None
        self.reports: list[dict[str, str]] = []

    def boot(self):
        """Mounts the last cut's durable state (or an empty disk) and starts the broker."""
        self.n += 1
        self.fs = PowercutFs(self.work, str(self.n), self.source, self.lies)
        self.broker = start_broker(self.fs.mnt / "data", self.work, str(self.n))
        return self.broker

    def cut(self, load: Load | None) -> dict[str, str]:
        into = self.work / f"cut-{self.n}"
        if load is None:
            report = self.fs.cut(into)
            self.broker.kill9()
        else:
            report = cut_under_load(self.fs, self.broker, load, into)
        self.fs.close()
        self.fs, self.broker, self.source = None, None, into
        self.reports.append(report)
        print(f"cut {self.n}: {report}; ledger {self.ledger.counts()}")
        return report

    def close(self):
        if self.broker is not None:
            self.broker.kill9()
        if self.fs is not None:
            self.fs.close()


@pytest.fixture
def run(work):
    runs: list[Run] = []

    def make(lies: tuple[str, ...] = ()) -> Run:
        r = Run(work, lies)
        runs.append(r)
        return r

    yield make
    for r in runs:
        r.close()


def test_cut_right_after_the_declarations(run):
    """Queues, the delayed exchange and the topic exist after a cut that follows their
    declare-ok / CreateTopics answer at once: their directories' entries were synced."""
    r = run()
    setup(r.boot(), r.ledger)
    r.cut(None)
    problems = check(r.boot(), r.ledger)
    assert not problems, "\n".join(problems)


def test_cut_right_after_the_first_acks(run):
    """Each publisher's and producer's first confirms, moments after its queue, topic or
    segment file was created: the newest directory entries are the ones a cut drops."""
    r = run()
    b = r.boot()
    setup(b, r.ledger)
    load = Load(b, r.ledger, "a").start()
    load.wait_first_acks()
    r.cut(load)
    problems = check(r.boot(), r.ledger)
    assert not problems, "\n".join(problems)


def test_cut_mid_load_and_again_after_recovery(run):
    """A cut after seconds of load; the broker recovers on what was durable (cutting torn
    tails, replaying journals, on the same file system), takes more load, and is cut
    again: everything acknowledged in either life is there after the second."""
    r = run()
    b = r.boot()
    setup(b, r.ledger)
    load = Load(b, r.ledger, "a").start()
    load.wait_first_acks()
    time.sleep(3)
    r.cut(load)
    b = r.boot()
    problems = check(b, r.ledger)
    assert not problems, "after the first cut:\n" + "\n".join(problems)
    load = Load(b, r.ledger, "b").start()
    load.wait_first_acks()
    time.sleep(2)
    r.cut(load)
    problems = check(r.boot(), r.ledger)
    assert not problems, "after the second cut:\n" + "\n".join(problems)
    counts = r.ledger.counts()
    assert counts["confirmed"] > 100 and counts["records"] > 1000, counts


@pytest.mark.parametrize("lie, lost", [
    # Directory fsyncs of the queue directories do nothing: queue logs' entries vanish.
    ("dir:queues", "queue "),
    # File fsyncs of log segments do nothing: acknowledged records vanish.
    ("file:.seg", "topic "),
])
def test_a_disk_that_drops_syncs_is_caught(run, lie, lost):
    r = run(lies=(lie,))
    b = r.boot()
    setup(b, r.ledger)
    load = Load(b, r.ledger, "a").start()
    load.wait_first_acks()
    time.sleep(0.5)
    r.cut(load)
    problems = check(r.boot(), r.ledger)
    print("\n".join(problems))
    assert any(p.startswith(lost) for p in problems), problems
