"""The audit log from Python: each operator action of a facade writes one entry, in its own
transaction, under the OS user (source ``python``) or the actor set with ``acting_as``; reads
page newest first; the sweeper prunes entries with the throughput window."""

from __future__ import annotations

import pytest

from pgqueue import AsyncQueue, InvalidTask, KindOptions, Queue, Task
from pgqueue.audit import Actor, acting_as, os_user
from pgqueue.store import operations
from pgqueue.store.queries import Queries
from tests.conftest import Database

OPTIONS = KindOptions(attempt_timeout=5.0, max_attempts=1)


def test_every_operator_action_of_the_blocking_queue_is_recorded(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", OPTIONS)
        first, second = queue.push_tasks([Task("k", 1, "a"), Task("k", 2)])
        assert first is not None and second is not None
        assert queue.audit_log() == []  # a push from Python is no operator action
        assert queue.cancel_task(first)
        assert not queue.cancel_task(first)  # recorded too, with 0 rows
        assert queue.retry_task(first, attempts=2)
        assert queue.cancel_task_by_key("k", "a")
        queue.pause_kind("k")
        queue.resume_kind("k")
        assert queue.retry_tasks("k", attempts=1, limit=10) == 0
        entries = queue.audit_log()
    assert [(e.action, e.kind, e.task_id, e.rows) for e in reversed(entries)] == [
        ("cancel_task", "k", first, 1),
        ("cancel_task", "k", first, 0),
        ("retry_task", "k", first, 1),
        ("cancel_task", "k", None, 1),
        ("pause_kind", "k", None, 1),
        ("resume_kind", "k", None, 1),
        ("retry_kind", "k", None, 0),
    ]
    assert {(e.source, e.actor) for e in entries} == {("python", os_user())}
    assert entries[3].detail == {"external_key": "a"}
    assert entries[0].detail == {"attempts": 1, "limit": 10}
    assert entries[0].at >= entries[-1].at


async def test_the_async_queue_records_under_the_actor_set(db: Database) -> None:
    queue = AsyncQueue(db.dsn, schema=db.schema)
    queue.declare_kind("k", OPTIONS)
    try:
        [task_id] = await queue.push_tasks([Task("k")])
        assert task_id is not None
        with acting_as(Actor("cli", "alice", detail={"host": "ops-1"})):
            assert await queue.cancel_task(task_id)
        await queue.pause_kind("k")
        [paused, cancelled] = await queue.audit_log()
        assert (cancelled.source, cancelled.actor, cancelled.detail) == (
            "cli",
            "alice",
            {"host": "ops-1"},
        )
        assert (paused.source, paused.actor) == ("python", os_user())
        assert await queue.audit_log(source="cli") == [cancelled]
        assert await queue.audit_log(action="pause_kind") == [paused]
        assert await queue.audit_log(before_id=paused.id) == [cancelled]
        assert await queue.audit_log(limit=1) == [paused]
    finally:
        await queue.close()


def test_an_action_that_fails_records_nothing(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        with pytest.raises(InvalidTask):
            queue.pause_kind("never-seen")
        with pytest.raises(InvalidTask):
            queue.audit_log(limit=0)
        assert queue.audit_log() == []


def test_actors_are_validated() -> None:
    with pytest.raises(ValueError, match="audit source"):
        Actor("web", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="actor's name"):
        Actor("cli", "")


def test_the_sweep_prunes_audit_entries_past_the_throughput_window(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", OPTIONS)
        queue.pause_kind("k")
        queue.resume_kind("k")
        db.fetch(
            "UPDATE {schema}.audit_log SET at = now() - interval '2 days' "
            "WHERE action = 'pause_kind'"
        )
        sweep = operations.sweep_terminal_tasks(
            Queries(db.schema), "k", ttl=3600, period=0, batch_size=100, throughput_window=86400
        )
        queue.executor.run(sweep)
        assert [e.action for e in queue.audit_log()] == ["resume_kind"]


def test_limit_overrides_are_recorded_with_the_overrides_in_force(db: Database) -> None:
    from pgqueue import RateLimit

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", OPTIONS)
        with acting_as(Actor("cli", "ops")):
            queue.set_limits("k", rate_limit=RateLimit(10, per=1.0), global_concurrency=5)
        queue.clear_limits("k")
        entries = queue.audit_log(action="set_limits")
    cleared, set_ = entries  # newest first
    assert (set_.source, set_.actor, set_.kind, set_.rows) == ("cli", "ops", "k", 1)
    assert set_.detail["global_concurrency"] == 5
    assert set_.detail["rate_limit"]["n"] == 10
    assert cleared.detail == {
        "rate_limit": None,
        "global_concurrency": None,
        "group_concurrency": None,
        "group_rate_limit": None,
    }
    assert (cleared.source, cleared.actor) == ("python", os_user())
