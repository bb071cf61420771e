"""Connections the server closed: a pooled connection that the server terminated while it was
idle is replaced before a statement is sent on it (the push goes through); a connection lost
while a statement runs raises ``DatabaseUnavailable`` with the driver's error as its cause.
No caller sees a driver exception."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import psycopg
import pytest

from pgqueue import AsyncQueue, DatabaseUnavailable, KindOptions, Queue, Task
from pgqueue.store.executor import Statement, single
from tests.conftest import Database

OPTIONS = KindOptions(attempt_timeout=5.0)


def tagged(dsn: str) -> tuple[str, str]:
    """``dsn`` with an ``application_name`` of its own, so the test ends only its connections."""
    name = f"lost_{uuid.uuid4().hex[:10]}"
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}", name


def terminate(db: Database, application_name: str) -> int:
    """End every backend of ``application_name`` and wait until each has exited (so its
    farewell is on the client's socket)."""
    rows = db.fetch(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE application_name = %s",
        (application_name,),
    )
    assert all(ok for (ok,) in rows)
    return len(rows)


def keys(db: Database) -> list[str]:
    return [key for (key,) in db.fetch("SELECT external_key FROM {schema}.tasks ORDER BY id")]


def test_a_push_after_the_server_ended_the_pools_connections_goes_through(db: Database) -> None:
    dsn, name = tagged(db.dsn)
    with Queue(dsn, schema=db.schema) as queue:
        queue.declare_kind("k", OPTIONS)
        queue.push_task(Task("k", external_key="before"))
        queue.push_tasks([Task("k", external_key="batch-before")])  # a second connection
        assert terminate(db, name) >= 1
        queue.push_task(Task("k", external_key="after"))  # raised AdminShutdown before
        queue.push_tasks([Task("k", external_key="batch-after")])
        assert queue.get_task(1) is not None
    assert keys(db) == ["before", "batch-before", "after", "batch-after"]


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_an_async_push_after_the_server_ended_the_pools_connections_goes_through(
    db: Database, driver: str
) -> None:
    from pgqueue.adapters.asyncpg import AsyncpgExecutor

    dsn, name = tagged(db.dsn)
    queue = AsyncQueue(AsyncpgExecutor(dsn) if driver == "asyncpg" else dsn, schema=db.schema)
    queue.declare_kind("k", OPTIONS)
    try:
        await queue.push_task(Task("k", external_key="before"))
        await asyncio.gather(*(queue.push_task(Task("k", external_key=f"c{i}")) for i in range(4)))
        # Blocking the loop on purpose: it has no chance to read the server's farewell first.
        assert terminate(db, name) >= 1
        await queue.push_task(Task("k", external_key="after"))
        await queue.retry_tasks("k")  # a transactional operation
        assert await queue.count_tasks() == {("k", "new"): 6}
    finally:
        await queue.close()


def run_long_statement(queue: Any, outcome: list[BaseException]) -> None:
    try:
        queue.executor.run(single(Statement("SELECT pg_sleep(30)", {})))
    except BaseException as exc:
        outcome.append(exc)


def wait_for_sleeper(db: Database, name: str) -> None:
    while not db.fetch(
        "SELECT 1 FROM pg_stat_activity "
        "WHERE application_name = %s AND query LIKE 'SELECT pg_sleep%%'",
        (name,),
    ):
        threading.Event().wait(0.02)  # another server's state: nothing to await


def test_a_connection_lost_while_a_statement_runs_raises_database_unavailable(
    db: Database,
) -> None:
    dsn, name = tagged(db.dsn)
    with Queue(dsn, schema=db.schema) as queue:
        queue.declare_kind("k", OPTIONS)
        outcome: list[BaseException] = []
        worker = threading.Thread(target=run_long_statement, args=(queue, outcome))
        worker.start()
        wait_for_sleeper(db, name)
        terminate(db, name)
        worker.join(10)
        [error] = outcome
        assert type(error) is DatabaseUnavailable
        assert isinstance(error.__cause__, psycopg.errors.AdminShutdown)
        assert "may or may not have been applied" in str(error)
        queue.push_task(Task("k", external_key="next"))  # the queue recovers at once
    assert keys(db) == ["next"]


async def test_an_asyncpg_connection_lost_while_a_statement_runs(db: Database) -> None:
    import asyncpg

    from pgqueue.adapters.asyncpg import AsyncpgExecutor

    dsn, name = tagged(db.dsn)
    queue = AsyncQueue(AsyncpgExecutor(dsn), schema=db.schema)
    queue.declare_kind("k", OPTIONS)
    try:
        sleeper = asyncio.ensure_future(
            queue.executor.run(single(Statement("SELECT pg_sleep(30)", {})))
        )
        await asyncio.to_thread(wait_for_sleeper, db, name)
        await asyncio.to_thread(terminate, db, name)
        with pytest.raises(DatabaseUnavailable, match="may or may not have been applied") as info:
            await sleeper
        assert isinstance(info.value.__cause__, asyncpg.PostgresError | asyncpg.InterfaceError)
        await queue.push_task(Task("k", external_key="next"))
    finally:
        await queue.close()
    assert keys(db) == ["next"]


def test_a_sqlalchemy_engine_queue_pushes_after_the_server_ended_its_connections(
    db: Database,
) -> None:
    from sqlalchemy import create_engine

    from pgqueue.migrate import sqlalchemy_url

    dsn, name = tagged(db.dsn)
    engine = create_engine(sqlalchemy_url(dsn), pool_size=2)  # no pre-ping: pgqueue checks
    try:
        with Queue(engine, schema=db.schema) as queue:
            queue.declare_kind("k", OPTIONS)
            queue.push_task(Task("k", external_key="before"))
            assert terminate(db, name) >= 1
            queue.push_task(Task("k", external_key="after"))
    finally:
        engine.dispose()
    assert keys(db) == ["before", "after"]


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_an_async_sqlalchemy_engine_queue_pushes_after_the_server_ended_its_connections(
    db: Database, driver: str
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from pgqueue.migrate import sqlalchemy_url

    _, name = tagged(db.dsn)
    url = sqlalchemy_url(db.dsn).replace("+psycopg", f"+{driver}", 1)
    tag: dict[str, Any] = {"application_name": name}
    engine = create_async_engine(
        url, pool_size=2, connect_args=tag if driver == "psycopg" else {"server_settings": tag}
    )
    queue = AsyncQueue(engine, schema=db.schema)
    queue.declare_kind("k", OPTIONS)
    try:
        await queue.push_task(Task("k", external_key="before"))
        assert terminate(db, name) >= 1  # blocking the loop: the farewell stays unread
        await queue.push_task(Task("k", external_key="after"))
    finally:
        await queue.close()
        await engine.dispose()
    assert keys(db) == ["before", "after"]
