"""A wrong DSN, an unmigrated schema and a push outside a transaction: each fails at once with
pgqueue's own error naming the cause and the fix, and writes nothing."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgqueue.migrate as migrate
import pgqueue.store.schema_version as schema_version
from pgqueue import (
    AsyncQueue,
    DatabaseUnavailable,
    KindOptions,
    NotInTransaction,
    Queue,
    SchemaNotMigrated,
    Task,
)
from tests.conftest import Database


def opts() -> KindOptions:
    return KindOptions(attempt_timeout=5.0)


def handler(envelope: Any) -> None: ...


def dsn_with(dsn: str, dbname: str) -> str:
    """The URL ``dsn`` with another database name (asyncpg takes URLs only)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + dbname))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_missing_database_fails_fast_with_the_servers_reason(db: Database) -> None:
    wrong = dsn_with(db.dsn, dbname="no_such_db")
    queue = Queue(wrong, schema=db.schema)
    queue.declare_kind("k", opts())
    began = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as info:
        queue.push_task(Task("k"))
    assert time.monotonic() - began < 5
    message = str(info.value)
    assert message.startswith("cannot connect to PostgreSQL (")
    assert 'database "no_such_db" does not exist' in message
    assert message.endswith(
        "check the DSN (PGQUEUE_DSN, or the queue's first argument) and that the server is running"
    )
    assert "\n" not in message
    queue.close()


def test_a_server_that_does_not_answer_fails_fast(db: Database) -> None:
    params = conninfo_to_dict(db.dsn)
    params.update(host="127.0.0.1", port=str(closed_port()))
    params.pop("hostaddr", None)
    queue = Queue(make_conninfo(**params), schema=db.schema)
    queue.register_kind("k", handler, opts())
    began = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match=r"Connection refused|connection failed"):
        queue.start()
    assert time.monotonic() - began < 5
    queue.close()


async def test_async_queue_and_asyncpg_report_the_reason_too(db: Database) -> None:
    from pgqueue.adapters.asyncpg import AsyncpgExecutor

    wrong = dsn_with(db.dsn, dbname="no_such_db")
    for target in (wrong, AsyncpgExecutor(wrong)):
        queue = AsyncQueue(target, schema=db.schema)
        queue.declare_kind("k", opts())
        with pytest.raises(DatabaseUnavailable, match='database "no_such_db" does not exist'):
            await queue.push_task(Task("k"))
        await queue.close()


def test_an_unmigrated_schema_says_to_run_pgqueue_migrate(empty_schema: Database) -> None:
    schema = empty_schema.schema
    expected_fix = (
        f"pgqueue's tables in schema {schema!r} are missing or out of date; run "
        f"`pgqueue migrate --schema {schema}` (with PGQUEUE_DSN set, or --dsn)"
    )
    with Queue(empty_schema.dsn, schema=schema) as queue:
        queue.register_kind("k", handler, opts())
        with pytest.raises(SchemaNotMigrated) as info:
            queue.push_task(Task("k"))
        assert str(info.value) == f'relation "{schema}.tasks" does not exist: {expected_fix}'
        with pytest.raises(SchemaNotMigrated) as info:
            queue.count_tasks()
        assert str(info.value).endswith(expected_fix)
        with pytest.raises(SchemaNotMigrated) as info:
            queue.start()
        assert str(info.value) == f'relation "{schema}.tasks" does not exist: {expected_fix}'
        with psycopg.connect(empty_schema.dsn) as conn, pytest.raises(SchemaNotMigrated):
            queue.push_task_tx(conn, Task("k"))


async def test_an_unmigrated_schema_on_asyncpg(empty_schema: Database) -> None:
    from pgqueue.adapters.asyncpg import AsyncpgExecutor

    queue = AsyncQueue(AsyncpgExecutor(empty_schema.dsn), schema=empty_schema.schema)
    queue.register_kind("k", handler, opts())
    with pytest.raises(SchemaNotMigrated, match="run `pgqueue migrate --schema"):
        await queue.push_task(Task("k"))
    with pytest.raises(SchemaNotMigrated, match="run `pgqueue migrate --schema"):
        await queue.start()
    await queue.close()


def test_start_refuses_a_schema_behind_this_version(
    empty_schema: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate.upgrade(empty_schema.dsn, empty_schema.schema)
    applied = migrate.current(empty_schema.dsn, empty_schema.schema)
    monkeypatch.setattr(schema_version, "known_revisions", lambda: (applied, "pgqueue_9999"))
    with Queue(empty_schema.dsn, schema=empty_schema.schema) as queue:
        queue.register_kind("k", handler, opts())
        with pytest.raises(SchemaNotMigrated) as info:
            queue.start()
    assert str(info.value).startswith(
        f"schema {empty_schema.schema!r} is at revision {applied} but this version of pgqueue "
        "needs pgqueue_9999: pgqueue's tables in schema"
    )
    monkeypatch.undo()
    with Queue(empty_schema.dsn, schema=empty_schema.schema) as queue:
        queue.register_kind("k", handler, opts())
        queue.start()  # at head: starts


def test_known_revisions_come_from_the_shipped_files() -> None:
    revisions = schema_version.known_revisions()
    assert revisions[0] == "pgqueue_0001"
    assert list(revisions) == sorted(revisions)


def test_push_tx_refuses_an_autocommit_connection(db: Database) -> None:
    from sqlalchemy import create_engine

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", opts())
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            with pytest.raises(NotInTransaction) as info:
                queue.push_task_tx(conn, Task("k", "autocommit"))
            with pytest.raises(NotInTransaction):
                queue.push_tasks_tx(conn, [Task("k", "a"), Task("k", "b")])
            with conn.transaction():  # an explicit transaction on it is fine
                queue.push_task_tx(conn, Task("k", "in a transaction"))
        engine = create_engine(
            migrate.sqlalchemy_url(db.dsn), isolation_level="AUTOCOMMIT", pool_size=1
        )
        with engine.connect() as sa_conn, pytest.raises(NotInTransaction):
            queue.push_task_tx(sa_conn, Task("k", "sqlalchemy autocommit"))
        engine.dispose()
    assert str(info.value) == (
        "push_*_tx needs a connection inside a transaction, and this psycopg connection is in "
        "autocommit mode outside one: the push would commit on its own, apart from your writes. "
        "Nothing was written; push inside `with conn.transaction():` or use a connection with "
        "autocommit=False"
    )
    assert isinstance(info.value, TypeError)
    payloads = [row[0] for row in db.fetch("SELECT payload FROM {schema}.tasks")]
    assert payloads == ["in a transaction"]


async def test_async_push_tx_refuses_an_autocommit_connection(db: Database) -> None:
    queue = AsyncQueue(db.dsn, schema=db.schema)
    queue.declare_kind("k", opts())
    async with await psycopg.AsyncConnection.connect(db.dsn, autocommit=True) as conn:
        with pytest.raises(NotInTransaction, match="autocommit mode outside one"):
            await queue.push_task_tx(conn, Task("k", "autocommit"))
        async with conn.transaction():
            await queue.push_task_tx(conn, Task("k", "in a transaction"))
    await queue.close()
    payloads = [row[0] for row in db.fetch("SELECT payload FROM {schema}.tasks")]
    assert payloads == ["in a transaction"]


def test_a_queue_closes_promptly_after_the_start_up_check(db: Database) -> None:
    """The start-up check must not hold a connection the runtime's loops then wait on: closing
    right after start() once hung on the embedded server until the drain bound."""
    import threading

    for _ in range(5):
        queue = Queue(db.dsn, schema=db.schema)
        queue.register_kind("k", handler, KindOptions(attempt_timeout=5.0, worker_count=4))
        queue.start()
        closer = threading.Thread(target=queue.close, daemon=True)
        closer.start()
        closer.join(15)
        assert not closer.is_alive(), "close() hung after start()"


def test_close_ends_when_a_background_loop_loses_its_cancellation(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before Python 3.12, ``asyncio.wait_for`` inside psycopg can drop a cancellation that
    lands as its result arrives; the sweeper then went on to sleep for its janitor period and
    close() waited it out (seen once in about a hundred start/close cycles). Here the sweeper
    drops its first cancellation every time: close() must still end."""
    import asyncio
    import threading

    from pgqueue.runtime.maintenance import Sweeper

    dropped = 0

    async def sweep_losing_a_cancel(self: Sweeper) -> None:
        nonlocal dropped
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            dropped += 1  # lost, as wait_for loses it
        await asyncio.sleep(3600)

    monkeypatch.setattr(Sweeper, "run", sweep_losing_a_cancel)
    queue = Queue(db.dsn, schema=db.schema)
    queue.register_kind("k", handler, KindOptions(attempt_timeout=5.0))
    queue.start()
    closer = threading.Thread(target=queue.close, daemon=True)
    closer.start()
    closer.join(15)
    assert not closer.is_alive(), "close() waited on a loop that lost its cancellation"
    assert dropped == 1


def test_a_failed_statement_leaves_the_blocking_executors_connection_usable(db: Database) -> None:
    # Single statements run on one kept connection and one kept cursor: an error there must
    # not spoil the next statement, nor cost the connection.
    from pgqueue.adapters.psycopg import PsycopgExecutor
    from pgqueue.store.executor import Statement, single

    executor = PsycopgExecutor(db.dsn)
    try:
        pid = executor.run(single(Statement("SELECT pg_backend_pid()", {})))
        with pytest.raises(psycopg.errors.DivisionByZero):
            executor.run(single(Statement("SELECT 1 / %(zero)s", {"zero": 0})))
        assert executor.run(single(Statement("SELECT %(n)s + 1", {"n": 41}))) == [(42,)]
        assert executor.run(single(Statement("SELECT pg_backend_pid()", {}))) == pid
        assert executor.run(single(Statement("SELECT 1 WHERE false", {}))) == []
    finally:
        executor.close()


async def test_a_failed_statement_leaves_the_async_executors_connection_usable(
    db: Database,
) -> None:
    from pgqueue.adapters.psycopg import AsyncPsycopgExecutor
    from pgqueue.store.executor import Statement, single

    executor = AsyncPsycopgExecutor(db.dsn)
    try:
        pid = await executor.run(single(Statement("SELECT pg_backend_pid()", {})))
        with pytest.raises(psycopg.errors.DivisionByZero):
            await executor.run(single(Statement("SELECT 1 / %(zero)s", {"zero": 0})))
        assert await executor.run(single(Statement("SELECT %(n)s + 1", {"n": 41}))) == [(42,)]
        assert await executor.run(single(Statement("SELECT pg_backend_pid()", {}))) == pid
        assert await executor.run(single(Statement("SELECT 1 WHERE false", {}))) == []
    finally:
        await executor.close()
