"""pgqueue.testing: assertions on pushed tasks and inline drains, blocking and async."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from pgqueue import (
    AsyncQueue,
    Decision,
    Jitter,
    JitterDelayer,
    KindOptions,
    MustCancelTask,
    Queue,
    Status,
    Task,
)
from pgqueue.pytest_plugin import TestSchema
from pgqueue.testing import assert_not_pushed, assert_pushed, drain
from tests.conftest import Database


def opts(**kwargs: Any) -> KindOptions:
    kwargs.setdefault("attempt_timeout", 5.0)
    kwargs.setdefault("delayer", JitterDelayer(Jitter.ZERO, base=30.0))
    return KindOptions(**kwargs)


def test_assert_pushed_matches_kind_key_and_contained_payload(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("mail", opts())
        queue.push_task(Task("mail", {"to": "ada", "lang": "en"}, external_key="welcome:ada"))
        queue.push_task(Task("mail"))

        [found] = assert_pushed(queue, "mail", payload={"to": "ada"})
        assert found.external_key == "welcome:ada"
        assert found.payload == {"to": "ada", "lang": "en"}
        assert len(assert_pushed(queue, "mail")) == 2
        assert_pushed(queue, "mail", key="welcome:ada")
        assert_pushed(queue, "mail", payload=None)  # the task without payload

        with pytest.raises(AssertionError, match="no task pushed with kind='mail'"):
            assert_pushed(queue, "mail", payload={"to": "grace"})
        with pytest.raises(AssertionError, match="external_key='welcome:grace'"):
            assert_pushed(queue, "mail", key="welcome:grace")
        assert_not_pushed(queue, "mail", payload={"to": "grace"})
        assert_not_pushed(queue, "other")
        with pytest.raises(AssertionError, match="1 task"):
            assert_not_pushed(queue, "mail", key="welcome:ada")


def test_drain_runs_due_tasks_in_the_calling_thread_and_records_them(db: Database) -> None:
    threads: list[threading.Thread] = []

    def handler(envelope: Any) -> None:
        threads.append(threading.current_thread())
        if envelope.payload == "cancel":
            raise MustCancelTask("no")
        if envelope.payload == "fail":
            raise RuntimeError("boom")

    def failure(envelope: Any, error: BaseException) -> Decision:
        return Decision.retry_now() if envelope.attempt < 3 else Decision.drop()

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", handler, opts(max_attempts=5, failure=failure))
        ok, cancelled, failing = (queue.push_task(Task("k", p)) for p in ("ok", "cancel", "fail"))
        later = queue.push_task(Task("k", "later"), delay=3600)

        outcomes = drain(queue)

        assert set(threads) == {threading.current_thread()}
        by_task = {(o.id, o.attempt): o.status for o in outcomes}
        assert by_task == {
            (ok, 1): Status.SUCCEEDED,
            (cancelled, 1): Status.CANCELLED,
            (failing, 1): Status.MUST_RETRY,  # retried now: run again by the same drain
            (failing, 2): Status.MUST_RETRY,
            (failing, 3): Status.NO_ATTEMPTS_LEFT,
        }
        assert [o.error for o in outcomes if o.id == failing] == ["RuntimeError: boom"] * 3
        info = queue.get_task(failing)
        assert info is not None and info.status is Status.NO_ATTEMPTS_LEFT
        assert info.messages == ["RuntimeError: boom"] * 3
        later_info = queue.get_task(later)  # not due: left alone
        assert later_info is not None and later_info.status is Status.NEW
        assert drain(queue, "k") == []


def test_drain_stops_at_its_limit_and_refuses_a_running_queue(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", lambda e: None, opts())
        queue.push_tasks([Task("k", n) for n in range(3)])
        assert len(drain(queue, limit=2)) == 2
        with pytest.raises(ValueError, match="limit"):
            drain(queue, limit=0)
        queue.start()
        with pytest.raises(RuntimeError, match="stop"):
            drain(queue)
        queue.stop()
        queue.declare_kind("producer-only", opts())
        with pytest.raises(ValueError, match="no handler"):
            drain(queue, "producer-only")


async def test_async_queue_assertions_and_drain_are_awaited(db: Database) -> None:
    started = asyncio.Event()

    async def slow(envelope: Any) -> None:
        started.set()
        await asyncio.sleep(3600)  # cancelled at the attempt deadline

    async def quick(envelope: Any) -> None:
        pass

    async with AsyncQueue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("slow", slow, opts(attempt_timeout=0.2, max_attempts=1))
        queue.register_kind("quick", quick, opts())
        await queue.push_task(Task("quick", {"n": 1}, external_key="q1"))
        slow_id = await queue.push_task(Task("slow"))

        [found] = await assert_pushed(queue, "quick", payload={"n": 1}, key="q1")
        assert found.status == "new"
        await assert_not_pushed(queue, "quick", key="q2")
        with pytest.raises(AssertionError):
            await assert_pushed(queue, "quick", key="q2")

        outcomes = await drain(queue, "slow")
        assert [(o.id, o.status) for o in outcomes] == [(slow_id, Status.NO_ATTEMPTS_LEFT)]
        assert outcomes[0].error is not None and "timed out" in outcomes[0].error
        assert started.is_set()
        assert [o.status for o in await drain(queue)] == [Status.SUCCEEDED]


async def test_a_blocking_queue_drains_inside_an_async_test(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", lambda e: None, opts())
        queue.push_task(Task("k"))
        assert [o.status for o in drain(queue)] == [Status.SUCCEEDED]


def test_pgqueue_schema_fixture_gives_a_migrated_private_schema(
    pgqueue_schema: TestSchema,
) -> None:
    from pgqueue import migrate

    assert migrate.current(pgqueue_schema.server_dsn, pgqueue_schema.name) is not None
    with Queue(pgqueue_schema.dsn, schema=pgqueue_schema.name) as queue:
        queue.declare_kind("k", opts())
        queue.push_task(Task("k", external_key="x"))
        assert_pushed(queue, "k", key="x")
