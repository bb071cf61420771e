"""A retry due at once (``Decision.retry_now()``) runs again within milliseconds."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from pgqueue import Decision, KindOptions, LoopOptions, Queue, Task
from pgqueue.events import Event, ResultsWritten
from tests.conftest import Database

TASKS = 50


def test_retry_now_reruns_within_milliseconds_not_at_the_next_poll(db: Database) -> None:
    written: dict[int, float] = {}  # task id -> when its failed attempt's result was written
    second_start: dict[int, float] = {}
    done = threading.Condition()

    def handler(envelope: Any) -> None:
        if envelope.attempt == 1:
            raise RuntimeError("try again")
        with done:
            second_start[envelope.id] = time.monotonic()
            done.notify_all()

    def listener(event: Event) -> None:
        if isinstance(event, ResultsWritten):
            now = time.monotonic()
            for task_id, _kind, status, applied in event.results:
                if applied and status == "must_retry":
                    written.setdefault(task_id, now)

    options = KindOptions(
        attempt_timeout=5,
        worker_count=10,
        # A poll far longer than the bound: only the wake-up can meet it.
        loop=LoopOptions(poll_period=30.0),
        failure=lambda envelope, error: Decision.retry_now(),
    )
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("flaky", handler, options)
        queue.subscribe(listener)
        queue.start()
        queue.wait_listening()
        for count in range(1, TASKS + 1):
            # One at a time, each retried while the worker is otherwise idle.
            queue.push_task(Task("flaky", None))
            with done:
                assert done.wait_for(lambda n=count: len(second_start) == n, 10), (
                    "retry did not run"
                )
    latencies = [max(0.0, second_start[i] - written[i]) for i in second_start]
    assert len(latencies) == TASKS
    assert statistics.median(latencies) < 0.1, sorted(latencies)
