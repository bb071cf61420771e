"""The operations API on both facades: task listing, pause/resume, kinds and throughput."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from pgqueue import (
    AsyncQueue,
    Decision,
    InvalidTask,
    KindInfo,
    KindOptions,
    LoopOptions,
    Queue,
    Status,
    Task,
    ThroughputPoint,
    UnknownKind,
)
from pgqueue.store.operations import EXACT_FINISHED_BELOW, PAYLOAD_SCAN_ROWS
from tests.conftest import Database
from tests.helpers import Recorder

FAST = LoopOptions(poll_period=0.2, janitor_period=0.2, lease_margin=2.0)


def opts(**kwargs: Any) -> KindOptions:
    kwargs.setdefault("attempt_timeout", 5.0)
    kwargs.setdefault("loop", FAST)
    return KindOptions(**kwargs)


def test_list_tasks_pages_newest_first_and_filters(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("mail", opts())
        queue.declare_kind("sms", opts())
        ids = queue.push_tasks(
            [Task("mail", {"to": "a", "n": i}, f"mail-{i}") for i in range(7)]
            + [Task("sms", {"to": "b"}, "sms-1"), Task("sms", {"to": "c"})]
        )
        mail_ids = sorted((i for i in ids[:7] if i), reverse=True)

        first = queue.list_tasks(kind="mail", limit=3)
        assert [t.id for t in first] == mail_ids[:3]
        # A push between pages does not shift the next page: the cursor is an id.
        queue.push_task(Task("mail", {"to": "late"}))
        second = queue.list_tasks(kind="mail", limit=3, before_id=first[-1].id)
        assert [t.id for t in second] == mail_ids[3:6]
        third = queue.list_tasks(kind="mail", limit=3, before_id=second[-1].id)
        assert [t.id for t in third] == mail_ids[6:]

        assert [t.external_key for t in queue.list_tasks(key_prefix="sms-")] == ["sms-1"]
        assert {t.kind for t in queue.list_tasks(status="new")} == {"mail", "sms"}
        assert queue.list_tasks(status=Status.SUCCEEDED) == []
        found = queue.list_tasks(payload_contains={"to": "c"})
        assert [t.payload for t in found] == [{"to": "c"}]
        found = queue.list_tasks(kind="mail", payload_contains={"n": 4})
        assert [t.external_key for t in found] == ["mail-4"]
        info = found[0]
        assert info.status is Status.NEW and info.stored_status is Status.NEW
        assert info.attempts_left == info.max_attempts == 10
        assert PAYLOAD_SCAN_ROWS == 10_000  # the documented bound


def blocking_handler() -> tuple[Callable[[Any], None], threading.Event, threading.Event]:
    """A sync handler that sets ``started`` and then holds its attempt until ``release``."""
    release = threading.Event()
    started = threading.Event()

    def handler(envelope: Any) -> None:
        started.set()
        release.wait(10)

    return handler, started, release


def test_list_tasks_sees_processing_as_a_derived_status(db: Database) -> None:
    handler, started, release = blocking_handler()
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("slow", handler, opts(worker_count=1))
        task_id = queue.push_task(Task("slow", None))
        queue.start()
        try:
            assert started.wait(10)
            processing = queue.list_tasks(status="processing")
            assert [t.id for t in processing] == [task_id]
            assert processing[0].status is Status.PROCESSING
            assert queue.list_tasks(status="new") == []
            kinds = {k.kind: k for k in queue.list_kinds()}
            assert kinds["slow"].counts["processing"] == 1
        finally:
            release.set()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "running"}, "status must be one of"),
        ({"status": 3}, "status must be one of"),
        ({"limit": 0}, "limit must be an int from 1 to 1000"),
        ({"limit": 1001}, "limit must be an int"),
        ({"limit": True}, "limit must be an int"),
        ({"before_id": "9"}, "before_id must be an int"),
        ({"before_id": 0}, "before_id must be a positive 64-bit integer"),
        ({"kind": ""}, "task kind must not be empty"),
        ({"key_prefix": ""}, "key_prefix must be a non-empty string"),
        ({"payload_contains": {1, 2}}, "not JSON-serialisable"),
    ],
)
def test_list_tasks_rejects_bad_filters_before_any_sql(
    db: Database, kwargs: dict[str, Any], message: str
) -> None:
    with Queue(db.dsn, schema=db.schema) as queue, pytest.raises(InvalidTask, match=message):
        queue.list_tasks(**kwargs)


def test_list_kinds_counts_lag_and_options(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        options = opts()
        queue.declare_kind("a", options)
        queue.declare_kind("idle", options)
        queue.push_tasks([Task("a", i) for i in range(3)])
        queue.push_task(Task("a", "later"), delay=3600)
        db.fetch(
            "INSERT INTO {schema}.tasks (kind, status, attempts_left, max_attempts, finished_at)"
            " VALUES ('b', 'succeeded', 0, 1, now()), ('b', 'cancelled', 0, 1, now())"
        )
        db.fetch("UPDATE {schema}.tasks SET delayed_till = now() - interval '90 seconds'"
                 " WHERE kind = 'a' AND payload = '0'")  # fmt: skip
        kinds = queue.list_kinds()
        assert [k.kind for k in kinds] == ["a", "b", "idle"]
        a, b, idle = kinds
        assert isinstance(a, KindInfo)
        assert a.counts == {
            "new": 4,
            "must_retry": 0,
            "no_attempts_left": 0,
            "blocked": 0,
            "processing": 0,
            "due": 3,
            "cancelled": 0,
            "succeeded": 0,
        }
        assert a.oldest_due_seconds is not None and 90 <= a.oldest_due_seconds < 120
        assert a.options is options and not a.paused
        assert b.counts["succeeded"] == 1 and b.counts["cancelled"] == 1
        assert b.options is None and b.oldest_due_seconds is None
        assert not b.finished_estimated  # a small table is counted exactly
        assert idle.counts["new"] == 0 and idle.oldest_due_seconds is None
        assert EXACT_FINISHED_BELOW == 100_000


def test_pause_and_resume_are_stored_and_checked(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", opts())
        queue.pause_kind("k")
        queue.pause_kind("k")  # idempotent: keeps the first pause time
        (kind,) = queue.list_kinds()
        assert kind.paused and kind.paused_at is not None
        queue.resume_kind("k")
        assert not queue.list_kinds()[0].paused
        with pytest.raises(UnknownKind, match="'nope' is unknown"):
            queue.pause_kind("nope")
        with pytest.raises(InvalidTask):
            queue.pause_kind("")
    assert db.scalar("SELECT count(*) FROM {schema}.kinds WHERE kind = 'nope'") == 0
    # An operator queue that declares nothing works from the database alone.
    with Queue(db.dsn, schema=db.schema) as operator:
        operator.pause_kind("k")
        assert [k.paused for k in operator.list_kinds()] == [True]
        with pytest.raises(UnknownKind):
            operator.resume_kind("other")
        assert operator.retry_tasks("k") == 0
        assert operator.cancel_task_by_key("k", "missing") is False
        with pytest.raises(UnknownKind):
            operator.retry_tasks("other")


def test_paused_kind_is_not_claimed_but_accepts_pushes(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", lambda envelope: None, opts())
        recorder = Recorder(queue)
        queue.pause_kind("k")
        queue.start()
        queue.wait_listening()
        task_id = queue.push_task(Task("k", 1))
        assert task_id is not None
        # The claim statement itself checks the flag: claiming directly takes nothing.
        claimed = db.fetch(
            queue.queries["claim_due_tasks"].replace("%(kind)s", "'k'")
            .replace("%(limit)s", "10").replace("%(lease)s", "10")
            .replace("%(floor)s", "NULL")
        )  # fmt: skip
        assert claimed == []  # no rows: nothing claimed
        queue.resume_kind("k")
        recorder.wait_status(task_id, "succeeded")


def test_throughput_counts_outcomes_per_minute_and_survives_deletes(db: Database) -> None:
    def handler(envelope: Any) -> None:
        if envelope.payload == "fail":
            raise RuntimeError("boom")
        if envelope.payload == "cancel":
            raise __import__("pgqueue").MustCancelTask("no")

    options = opts(
        max_attempts=2,
        terminal_tasks_ttl=0,
        failure=lambda envelope, error: Decision.retry_now(),
    )
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", handler, options)
        recorder = Recorder(queue)
        ids = queue.push_tasks(
            [Task("k", "ok")] * 5 + [Task("k", "fail")] * 2 + [Task("k", "cancel")]
        )
        queue.start()
        recorder.wait(
            lambda r: all(
                r.status_of(i) in {"succeeded", "no_attempts_left", "cancelled"} for i in ids
            )
        )
        points = queue.throughput(kind="k", minutes=5)
    assert db.scalar("SELECT count(*) FROM {schema}.tasks WHERE status = 'succeeded'") == 0
    assert all(isinstance(p, ThroughputPoint) for p in points)
    totals = [sum(getattr(p, name) for p in points)
              for name in ("succeeded", "failed", "exhausted", "cancelled")]  # fmt: skip
    assert totals == [5, 2, 2, 1]
    with Queue(db.dsn, schema=db.schema) as reader:
        assert reader.throughput(minutes=5) == points
        assert reader.throughput(kind="other") == []
        with pytest.raises(InvalidTask, match="minutes must be an int"):
            reader.throughput(minutes=0)


def test_sweeper_prunes_throughput_older_than_the_window(db: Database) -> None:
    db.fetch(
        "INSERT INTO {schema}.throughput (kind, minute, succeeded) VALUES"
        " ('k', date_trunc('minute', now()) - interval '2 hours', 1),"
        " ('k', date_trunc('minute', now()), 2)"
    )
    options = opts(loop=LoopOptions(poll_period=0.2, janitor_period=0.2, throughput_window=3600))
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", lambda envelope: None, options)
        recorder = Recorder(queue)
        queue.start()
        recorder.wait(lambda r: "k" in r.swept)
        assert [p.succeeded for p in queue.throughput(minutes=600)] == [2]


def test_async_facade_has_the_same_operations(db: Database) -> None:
    async def main() -> None:
        async with AsyncQueue(db.dsn, schema=db.schema) as queue:
            queue.declare_kind("k", opts())
            task_id = await queue.push_task(Task("k", {"x": 1}, "key"))
            assert [t.id for t in await queue.list_tasks(kind="k")] == [task_id]
            assert await queue.list_tasks(payload_contains={"x": 2}) == []
            await queue.pause_kind("k")
            kinds = await queue.list_kinds()
            assert kinds[0].paused and kinds[0].counts["new"] == 1
            await queue.resume_kind("k")
            assert await queue.throughput() == []
            with pytest.raises(InvalidTask):
                await queue.list_tasks(status="bogus")

    asyncio.run(main())


def test_retry_task_revives_one_ended_task_and_hurries_a_waiting_one(db: Database) -> None:
    handler, started, release = blocking_handler()
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", opts(max_attempts=3))
        exhausted, cancelled, succeeded, later, other = queue.push_tasks(
            [Task("k", i) for i in range(4)] + [Task("k", "untouched")]
        )
        assert later is not None and other is not None
        for task_id, status in ((exhausted, "no_attempts_left"), (other, "no_attempts_left"),
                                (cancelled, "cancelled"), (succeeded, "succeeded")):  # fmt: skip
            db.fetch(
                "UPDATE {schema}.tasks SET status = %s, attempts_left = 0, attempts_elapsed = 3,"
                " finished_at = now() WHERE id = %s",
                (status, task_id),
            )
        db.fetch(
            "UPDATE {schema}.tasks SET delayed_till = now() + interval '1 hour' WHERE id = %s",
            (later,),
        )
        for task_id in (exhausted, cancelled, succeeded):
            assert task_id is not None
            assert queue.retry_task(task_id, attempts=2) is True
            info = queue.get_task(task_id)
            assert info is not None
            assert info.status is Status.MUST_RETRY, task_id
            assert (info.attempts_left, info.attempts_elapsed, info.max_attempts) == (2, 3, 5)
            assert info.finished_at is None
        assert queue.retry_task(later) is True  # waiting: due now, its attempts kept
        hurried = queue.get_task(later)
        assert hurried is not None and hurried.status is Status.NEW
        assert hurried.attempts_left == 3
        assert db.scalar("SELECT delayed_till <= now() FROM {schema}.tasks WHERE id = %s", [later])
        untouched = queue.get_task(other)
        assert untouched is not None and untouched.status is Status.NO_ATTEMPTS_LEFT
        assert queue.retry_task(2**62) is False  # no such task
        with pytest.raises(InvalidTask, match="attempts must be an int from 1"):
            queue.retry_task(exhausted or 0, attempts=0)
        with pytest.raises(InvalidTask, match="task id must be an int"):
            queue.retry_task("7")  # type: ignore[arg-type]

    # A running task is left alone: its claim stays, nothing is revived under it.
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("slow", handler, opts(worker_count=1))
        running = queue.push_task(Task("slow", None))
        queue.start()
        try:
            assert started.wait(10)
            assert queue.retry_task(running) is False
            info = queue.get_task(running)
            assert info is not None and info.status is Status.PROCESSING
        finally:
            release.set()


def test_async_retry_task(db: Database) -> None:
    async def main() -> None:
        async with AsyncQueue(db.dsn, schema=db.schema) as queue:
            queue.declare_kind("k", opts())
            task_id = await queue.push_task(Task("k", {"x": 1}))
            assert await queue.cancel_task(task_id) is True
            assert await queue.retry_task(task_id) is True
            info = await queue.get_task(task_id)
            assert info is not None
            assert info.status is Status.MUST_RETRY and info.attempts_left == 1

    asyncio.run(main())
