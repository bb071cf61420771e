"""``Queue(engine)`` and ``AsyncQueue(async_engine)``: the whole lifecycle through SQLAlchemy."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from pgqueue import AsyncQueue, Jitter, JitterDelayer, KindOptions, LoopOptions, Queue, Status, Task
from pgqueue.migrate import sqlalchemy_url
from tests.conftest import Database
from tests.helpers import Recorder

FAST = LoopOptions(poll_period=0.2, janitor_period=60.0, lease_margin=2.0)


def opts() -> KindOptions:
    return KindOptions(
        attempt_timeout=5.0, loop=FAST, delayer=JitterDelayer(Jitter.ZERO, base=0.05)
    )


def test_queue_on_a_sqlalchemy_engine_pushes_runs_and_pushes_in_a_session(db: Database) -> None:
    engine = create_engine(sqlalchemy_url(db.dsn), pool_size=2)
    seen: list[Any] = []
    try:
        with Queue(engine, schema=db.schema) as queue:
            queue.register_kind("k", lambda e: seen.append(e.payload), opts())
            recorder = Recorder(queue)
            first = queue.push_task(Task("k", 1, external_key="one"))
            assert queue.push_task(Task("k", 1, external_key="one")) is None
            with Session(engine) as session:
                session.execute(text("SELECT 1"))
                second = queue.push_task_tx(session, Task("k", 2))
                session.commit()
            assert first is not None and second is not None
            queue.start()
            queue.wait_listening(10)
            third = queue.push_task(Task("k", 3))  # woken by NOTIFY
            assert third is not None
            for task_id in (first, second, third):
                recorder.wait_status(task_id, "succeeded")
            queue.stop()
            assert sorted(seen) == [1, 2, 3]
            assert queue.count_tasks() == {("k", "succeeded"): 3}
    finally:
        engine.dispose()


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_async_queue_on_an_async_engine(db: Database, driver: str) -> None:
    url = sqlalchemy_url(db.dsn).replace("+psycopg", f"+{driver}", 1)
    engine = create_async_engine(url, pool_size=4)
    seen: list[Any] = []

    async def handler(envelope: Any) -> None:
        seen.append(envelope.payload)

    try:
        async with AsyncQueue(engine, schema=db.schema) as queue:
            queue.register_kind("k", handler, opts())
            recorder = Recorder(queue)
            first = await queue.push_task(Task("k", 1))
            await queue.start()
            await queue.wait_listening()
            async with engine.begin() as conn:
                second = await queue.push_task_tx(conn, Task("k", 2))
            assert first is not None and second is not None
            await recorder.await_status(first, "succeeded")
            await recorder.await_status(second, "succeeded")
            info = await queue.get_task(second)
            assert info is not None and info.status is Status.SUCCEEDED
    finally:
        await engine.dispose()
    assert sorted(seen) == [1, 2]


def test_engines_of_the_wrong_kind_are_refused(db: Database) -> None:
    engine = create_async_engine(sqlalchemy_url(db.dsn))
    with pytest.raises(TypeError, match="AsyncEngine goes to AsyncQueue"):
        Queue(engine)
    sqlite = create_engine("sqlite://")
    with pytest.raises(TypeError, match="postgresql\\+psycopg"):
        Queue(sqlite)
    sqlite.dispose()
