"""A real Celery application against FerryMQ: a worker processes tasks, retries with
`countdown`, delayed tasks (`apply_async(countdown=...)`), results through the `rpc://`
backend (direct reply-to style result queues), with classic and with quorum task queues.
Quorum queues make Celery 5.5 use its native delayed delivery: a chain of topic exchanges
and queues with `x-message-ttl` + `x-dead-letter-exchange`, bound exchange to exchange."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(params=["classic", "quorum"])
def celery_env(request, private_broker):
    b = private_broker()
    url = b.url.replace("amqp://", "pyamqp://", 1)
    env = dict(os.environ)
    env.update(
        CELERY_BROKER_URL=url,
        CELERY_TEST_QUEUE=f"tasks-{request.param}",
        CELERY_TEST_QUEUE_TYPE=request.param,
        PYTHONPATH=str(HERE),
    )
    log = open(b.base_dir / "celery-worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker",
         "--pool=solo", "--concurrency=1", "--loglevel=INFO", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    os.environ["CELERY_BROKER_URL"] = url
    os.environ["CELERY_TEST_QUEUE"] = env["CELERY_TEST_QUEUE"]
    os.environ["CELERY_TEST_QUEUE_TYPE"] = request.param
    sys.path.insert(0, str(HERE))
    import importlib

    import celery_app

    importlib.reload(celery_app)
    yield celery_app, b, request.param
    celery_app.app.close()
    # The worker keeps nothing the test needs, and its shutdown (warm or cold) idles in
    # Celery's event loop for 8-10 s.
    worker.kill()
    worker.wait(timeout=15)
    log.close()
    for k in ("CELERY_BROKER_URL", "CELERY_TEST_QUEUE", "CELERY_TEST_QUEUE_TYPE"):
        os.environ.pop(k, None)


def worker_log(b) -> str:
    p = b.base_dir / "celery-worker.log"
    return p.read_text(errors="replace")[-4000:] if p.exists() else ""


@pytest.mark.timeout(120)
def test_celery_worker_tasks_retries_and_countdown(celery_env):
    capp, b, qtype = celery_env
    try:
        t0 = time.monotonic()
        assert capp.add.delay(2, 3).get(timeout=30) == 5
        print("first task", time.monotonic() - t0)
        results = [capp.add.delay(i, i) for i in range(20)]
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(20)]
        print("twenty", time.monotonic() - t0)

        start = time.monotonic()
        r = capp.add.apply_async((40, 2), countdown=2)
        assert r.get(timeout=30) == 42
        waited = time.monotonic() - start
        print("countdown", waited)
        assert waited >= 1.9, f"countdown honoured ({waited:.2f}s)"

        # While the worker holds tasks whose countdown has not run out, it raises its
        # prefetch with basic.qos (global=false: kombu reads the spec's meaning for any
        # server that is not RabbitMQ) and must keep receiving other tasks; otherwise the
        # held tasks fill the worker's prefetch until their ETA.
        # Five held tasks are more than the worker's prefetch (4: one solo process times
        # the multiplier), so without a prefetch raise nothing else is delivered.
        held = [capp.add.apply_async((7, i), countdown=8) for i in range(5)]
        time.sleep(0.5)
        start = time.monotonic()
        assert capp.add.delay(1, 1).get(timeout=5) == 2, "a task behind ETA tasks ran"
        assert not any(h.ready() for h in held), "the ETA tasks waited for their countdown"
        assert [h.get(timeout=30) for h in held] == [7 + i for i in range(5)]
        print("behind ETA tasks", time.monotonic() - start)

        start = time.monotonic()
        # Fails twice, retried each time with countdown=1, then succeeds on attempt 3.
        assert capp.flaky.delay(f"k-{qtype}", 2).get(timeout=60) == 3
        print("retries", time.monotonic() - start)
        assert time.monotonic() - start >= 1.9

        if qtype == "quorum":
            # The countdowns above went through Celery's native delayed delivery chain.
            import pika

            from amqp_helpers import params_for

            c = pika.BlockingConnection(params_for(b.url))
            ch = c.channel()
            ch.exchange_declare("celery_delayed_delivery", "topic", passive=True)
            q = ch.queue_declare("celery_delayed_0", passive=True)
            assert q.method.message_count == 0
            c.close()
    except Exception:
        print(worker_log(b))
        raise
