"""Snooze: ``raise Snooze(seconds)`` puts the task back to waiting without using an attempt."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pgqueue import (
    Envelope,
    InvalidOptions,
    InvalidTask,
    KindOptions,
    LoopOptions,
    Queue,
    Snooze,
    Status,
    Task,
)
from pgqueue.testing import drain
from tests.conftest import Database


def options(**overrides: Any) -> KindOptions:
    overrides.setdefault("max_attempts", 3)
    return KindOptions(attempt_timeout=10, **overrides)


def test_five_snoozes_leave_the_attempts_unchanged(db: Database) -> None:
    seen: list[tuple[int, int, int]] = []

    def patient(envelope: Envelope) -> str:
        seen.append((envelope.attempt, envelope.attempts_left, envelope.snoozes))
        if envelope.snoozes < 5:
            raise Snooze(0)
        return "ready"

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("patient", patient, options())
        task_id = queue.push_task(Task("patient"))
        assert task_id is not None
        runs = drain(queue, "patient")
        assert [r.status for r in runs] == [Status.MUST_RETRY] * 5 + [Status.SUCCEEDED]
        assert seen == [(1, 2, n) for n in range(6)]  # always the first attempt
        info = queue.get_task(task_id)
        assert info is not None and info.result == "ready" and info.snoozes == 5
        assert (info.attempts_elapsed, info.attempts_left, info.max_attempts) == (1, 2, 3)
        assert info.messages == []
    # A snooze is no failure in the throughput history.
    assert db.fetch("SELECT succeeded, failed FROM {schema}.throughput") == [(1, 0)]


def test_a_snooze_waits_its_delay_and_keeps_the_status_a_waiting_task_had(db: Database) -> None:
    def later(envelope: Envelope) -> None:
        raise Snooze(timedelta(hours=1))

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("later", later, options())
        task_id = queue.push_task(Task("later"))
        (run,) = drain(queue, "later")
        assert run.status is Status.MUST_RETRY and run.delay == 3600
        row = db.fetch(
            "SELECT status::text, attempts_elapsed, attempts_left, snoozes,"
            " delayed_till - now() BETWEEN interval '59 min' AND interval '61 min',"
            " claim_token IS NULL FROM {schema}.tasks WHERE id = %s",
            (task_id,),
        )
        assert row == [("new", 0, 3, 1, True, True)]


def test_max_snoozes_makes_the_next_snooze_a_failure(db: Database) -> None:
    def forever(envelope: Envelope) -> None:
        raise Snooze(0)

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("forever", forever, options(max_snoozes=2, max_attempts=1))
        task_id = queue.push_task(Task("forever"))
        runs = drain(queue, "forever")
        assert [r.status for r in runs] == [
            Status.MUST_RETRY,
            Status.MUST_RETRY,
            Status.NO_ATTEMPTS_LEFT,
        ]
        assert runs[-1].error == (
            "SnoozeLimit: the task snoozed 2 times, the kind's max_snoozes;"
            " this snooze (0s) counts as a failure"
        )
        info = queue.get_task(task_id)  # type: ignore[arg-type]
        assert info is not None and info.snoozes == 2 and info.attempts_elapsed == 1


def test_a_bad_snooze_delay_is_a_clear_error(db: Database) -> None:
    for bad in (-1, float("nan"), "5", timedelta(days=-1), 11 * 366 * 86400):
        with pytest.raises(InvalidTask, match="Snooze needs a delay from 0 to"):
            Snooze(bad)  # type: ignore[arg-type]

    def negative(envelope: Envelope) -> None:
        raise Snooze(-1)

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("negative", negative, options(max_attempts=1))
        queue.push_task(Task("negative"))
        (run,) = drain(queue, "negative")
        assert run.status is Status.NO_ATTEMPTS_LEFT
        assert run.error == (
            "InvalidTask: Snooze needs a delay from 0 to 315576000 seconds (10 years), got -1"
        )
        with pytest.raises(InvalidOptions, match="max_snoozes"):
            queue.register_kind("k", negative, options(max_snoozes=-1))


def test_a_running_queue_runs_a_snoozed_task_again_at_its_time(db: Database) -> None:
    def once(envelope: Envelope) -> int:
        if envelope.snoozes == 0:
            raise Snooze(0.3)
        return envelope.snoozes

    fast = LoopOptions(poll_period=30, janitor_period=60)  # the due time, not a poll, wakes it
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("once", once, options(loop=fast))
        task_id = queue.push_task(Task("once"))
        assert task_id is not None
        queue.start()
        info = queue.wait(task_id, timeout=5)
        assert info.status is Status.SUCCEEDED and info.result == 1
        assert info.attempts_elapsed == 1 and info.snoozes == 1
        assert info.finished_at is not None and info.started_at is not None
        assert (info.finished_at - info.created_at).total_seconds() >= 0.3  # type: ignore[operator]
