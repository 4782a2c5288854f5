"""A small Celery application for tests/e2e/test_celery.py. Configured from the
environment so the test can run a worker against a private FerryMQ broker with classic or
quorum task queues (quorum queues turn on Celery's native delayed delivery, which builds
topic exchanges, TTL + dead-letter chains and exchange-to-exchange bindings)."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

QUEUE = os.environ.get("CELERY_TEST_QUEUE", "tasks")
QUEUE_TYPE = os.environ.get("CELERY_TEST_QUEUE_TYPE", "classic")

app = Celery("ferry", broker=os.environ["CELERY_BROKER_URL"], backend="rpc://")
app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[Queue(QUEUE, queue_arguments={"x-queue-type": QUEUE_TYPE})],
    task_acks_late=True,
    # Celery's default. With 1 (prefetch 1 on a solo worker with late acks) Celery's own
    # event loop leaves a received task unprocessed until its next timer, up to 10 s per
    # task, against RabbitMQ as well (kombu's hub runs call_soon work only after the next
    # poll; celery/kombu#1587).
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    result_persistent=False,
)
if QUEUE_TYPE == "quorum":
    app.conf.update(
        task_default_queue_type="quorum",
        worker_detect_quorum_queues=True,
        broker_transport_options={"confirm_publish": True},
    )

# Attempts per key, in the (solo) worker process.
_attempts: dict[str, int] = {}


@app.task
def add(x, y):
    return x + y


@app.task(bind=True, max_retries=5)
def flaky(self, key, fail_times):
    n = _attempts.get(key, 0) + 1
    _attempts[key] = n
    if n <= fail_times:
        raise self.retry(countdown=1)
    return n
