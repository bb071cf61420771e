"""Throughput history: exact per-minute counts over several minutes with a retention of zero,
still there after the worker restarts."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from pgqueue import Decision, KindOptions, LoopOptions, MustCancelTask, Queue, Task
from tests.conftest import Database
from tests.helpers import Recorder

pytestmark = pytest.mark.minutes

# One round per minute: (payload, tasks) -> outcome counts per task.
MIX = {"ok": 7, "flaky": 4, "doomed": 3, "cancel": 2}
EXPECTED = {  # succeeded, failed (retried attempts), exhausted, cancelled
    "succeeded": MIX["ok"] + MIX["flaky"],
    "failed": MIX["flaky"] + MIX["doomed"],
    "exhausted": MIX["doomed"],
    "cancelled": MIX["cancel"],
}


def handler(envelope: Any) -> None:
    if envelope.payload == "flaky" and envelope.attempt == 1:
        raise RuntimeError("flaky")
    if envelope.payload == "doomed":
        raise RuntimeError("doomed")
    if envelope.payload == "cancel":
        raise MustCancelTask("not wanted")


OPTIONS = KindOptions(
    attempt_timeout=5,
    max_attempts=2,
    terminal_tasks_ttl=0,
    loop=LoopOptions(poll_period=0.2, janitor_period=0.5),
    failure=lambda envelope, error: Decision.retry_now(),
)


def database_minute(db: Database) -> tuple[datetime, float]:
    minute, second = db.fetch("SELECT date_trunc('minute', now()), extract(second FROM now())")[0]
    return minute, float(second)


def run_round(db: Database, queue: Queue, recorder: Recorder) -> datetime:
    """Push one mix at the start of a database minute and drain it within that minute."""
    while True:
        minute, second = database_minute(db)
        if second < 30:
            break
        time.sleep(60.5 - second)  # the database clock: wait for the next minute
    ids = queue.push_tasks([Task("mix", payload) for payload, n in MIX.items() for _ in range(n)])
    finished = ("succeeded", "no_attempts_left", "cancelled")
    recorder.wait(lambda r: all(r.status_of(i) in finished for i in ids), 25)
    assert database_minute(db)[0] == minute, "the round crossed a minute boundary"
    return minute


def test_three_minutes_of_mixed_outcomes_are_counted_exactly_and_kept(db: Database) -> None:
    minutes = []
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("mix", handler, OPTIONS)
        recorder = Recorder(queue)
        queue.start()
        for _ in range(3):
            minutes.append(run_round(db, queue, recorder))
            if len(minutes) < 3:
                time.sleep(max(0.0, 60.5 - database_minute(db)[1]))  # into the next minute
        before = queue.throughput(kind="mix", minutes=10)
    # Retention zero: finished rows are gone (exhausted ones wait for an operator's retry).
    assert db.fetch("SELECT status::text, count(*) FROM {schema}.tasks GROUP BY 1") == [
        ("no_attempts_left", 3 * MIX["doomed"])
    ]
    assert [p.minute for p in before] == minutes
    for point in before:
        counts = {name: getattr(point, name) for name in EXPECTED}
        assert counts == EXPECTED, point
    # A restarted worker finds the history and adds to it.
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("mix", handler, OPTIONS)
        recorder = Recorder(queue)
        queue.start()
        assert queue.throughput(kind="mix", minutes=10) == before
        time.sleep(max(0.0, 60.5 - database_minute(db)[1]))  # into the next minute
        later = run_round(db, queue, recorder)
        after = queue.throughput(kind="mix", minutes=10)
    assert after[:3] == before
    assert [p.minute for p in after[3:]] == [later]
    assert {name: getattr(after[3], name) for name in EXPECTED} == EXPECTED
