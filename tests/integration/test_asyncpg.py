"""The asyncpg adapter: AsyncQueue over an asyncpg pool (pushes, the worker runtime, admin
calls) and pushes in an asyncpg transaction, directly and through SQLAlchemy."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from pgqueue import AsyncQueue, Jitter, JitterDelayer, KindOptions, LoopOptions, Status, Task
from pgqueue.adapters.asyncpg import AsyncpgExecutor, _split_literal, array_params, convert
from pgqueue.store.operations import bare_array, float_array, int_array, text_array
from tests.conftest import Database
from tests.helpers import Recorder

FAST = LoopOptions(poll_period=0.2, janitor_period=60.0, lease_margin=4.0)


def opts(**kwargs: Any) -> KindOptions:
    kwargs.setdefault("attempt_timeout", 5.0)
    kwargs.setdefault("loop", FAST)
    kwargs.setdefault("delayer", JitterDelayer(Jitter.ZERO, base=0.05))
    return KindOptions(**kwargs)


def test_placeholders_convert_by_name_in_order_of_first_use() -> None:
    sql, names = convert("SELECT %(b)s, %(a)s::int, %(b)s || %(c)s")
    assert sql == "SELECT $1, $2::int, $1 || $3"
    assert names == ("b", "a", "c")
    with pytest.raises(ValueError, match="literal %"):
        convert("SELECT 1 %% 2")


def test_array_literals_become_lists_for_array_casts() -> None:
    sql = (
        "SELECT %(ids)s::bigint[], %(tokens)s::uuid[], %(kinds)s::text[], %(delays)s::float8[],"
        " %(keeps)s::int[], %(payload)s::jsonb"
    )
    assert array_params(sql) == {
        "ids": "bigint",
        "tokens": "uuid",
        "kinds": "text",
        "delays": "float8",
        "keeps": "int",
    }
    assert _split_literal("{1,22,333}", "bigint") == [1, 22, 333]
    assert _split_literal("{}", "bigint") == []
    token = "0b7e7e57-1111-2222-3333-444455556666"
    assert _split_literal(bare_array([token, token]), "uuid") == [token, token]
    assert _split_literal([4, 5], "bigint") == [4, 5]  # lists pass through
    assert _split_literal(bare_array(["succeeded", "cancelled"]), "text") == [
        "succeeded",
        "cancelled",
    ]
    assert _split_literal(float_array([0, 1.5, 1e-05]), "float8") == [0.0, 1.5, 1e-05]
    assert _split_literal(int_array([0, 7]), "int") == [0, 7]
    texts = [None, "", "NULL", 'a "b", {c}', "back\\slash\\", 'x\\"y', "é\n"]
    assert _split_literal(text_array(texts), "text") == texts
    assert _split_literal(text_array([None, None]), "text") == [None, None]


async def test_asyncpg_pool_runs_the_whole_lifecycle(db: Database) -> None:
    seen: list[Any] = []
    failed_once: set[int] = set()

    async def handler(envelope: Any) -> None:
        seen.append(envelope.payload)
        if envelope.payload == {"fail": "once"} and envelope.id not in failed_once:
            failed_once.add(envelope.id)
            raise RuntimeError("first attempt fails")

    pool = await asyncpg.create_pool(db.dsn, min_size=1, max_size=4)
    try:
        async with AsyncQueue(pool, schema=db.schema) as queue:
            assert isinstance(queue.executor, AsyncpgExecutor)
            queue.register_kind("k", handler, opts(terminal_tasks_ttl=3600))
            recorder = Recorder(queue)
            await queue.start()
            async with asyncio.timeout(10):
                await queue.wait_listening()
            single = await queue.push_task(Task("k", {"n": 1}))
            keyed = await queue.push_task(Task("k", [1, "two"], external_key="key"))
            assert await queue.push_task(Task("k", "dup", external_key="key")) is None
            batch = await queue.push_tasks([Task("k", {"fail": "once"}), Task("k", None)])
            ids = [single, keyed, *batch]
            assert all(isinstance(i, int) for i in ids)
            await recorder.await_(lambda r: all(r.status_of(i) == "succeeded" for i in ids))
            info = await queue.get_task(batch[0])  # type: ignore[arg-type]
            assert info is not None and info.status is Status.SUCCEEDED
            assert info.payload == {"fail": "once"} and info.attempts_elapsed == 2
            assert info.messages == ["RuntimeError: first attempt fails"]
            counts = await queue.count_tasks()
            assert counts[("k", "succeeded")] == 4
            await queue.stop()
    finally:
        await pool.close()
    assert sorted(map(str, seen)) == sorted(
        map(str, [{"n": 1}, [1, "two"], {"fail": "once"}, {"fail": "once"}, None])
    )


async def test_asyncpg_executor_from_a_dsn_cancels_and_retries(db: Database) -> None:
    started = asyncio.Event()

    async def hang(envelope: Any) -> None:
        if envelope.kind == "slow":
            started.set()  # the task to cancel is running
        await asyncio.Event().wait()

    async with AsyncQueue(AsyncpgExecutor(db.dsn), schema=db.schema) as queue:
        queue.register_kind("slow", hang, opts(attempt_timeout=30))
        queue.register_kind("once", hang, opts(attempt_timeout=0.2, max_attempts=1))
        recorder = Recorder(queue)
        slow = await queue.push_task(Task("slow", external_key="cancel-me"))
        once = await queue.push_task(Task("once"))
        await queue.start()
        async with asyncio.timeout(10):
            await queue.wait_listening()  # the cancel request travels by NOTIFY
            await started.wait()
        assert await queue.cancel_task_by_key("slow", "cancel-me")
        # The running handler is interrupted (the row was already cancelled by the call).
        await recorder.await_(
            lambda r: any(f.task_id == slow and f.status == "cancelled" for f in r.finished)
        )
        cancelled = await queue.get_task(slow)  # type: ignore[arg-type]
        assert cancelled is not None and cancelled.status is Status.CANCELLED
        await recorder.await_status(once, "no_attempts_left")  # type: ignore[arg-type]
        assert await queue.retry_tasks("once", attempts=1) == 1
        # The running queue claims the revived task again; its new attempt times out too.
        await recorder.await_(lambda r: r.written.get(once, []).count("no_attempts_left") == 2)
        info = await queue.get_task(once)  # type: ignore[arg-type]
        assert info is not None and info.attempts_elapsed == 2 and info.attempts_left == 0
        await queue.stop()


async def test_push_tx_in_an_asyncpg_transaction(db: Database) -> None:
    async with AsyncQueue(db.dsn, schema=db.schema) as queue:  # psycopg queue, asyncpg caller
        queue.declare_kind("k", opts())
        conn = await asyncpg.connect(db.dsn)
        try:
            async with conn.transaction():
                await queue.push_task_tx(conn, Task("k", "committed"))
                await queue.push_tasks_tx(conn, [Task("k", "batch", external_key="b")])
            with pytest.raises(RuntimeError, match="roll back"):
                async with conn.transaction():
                    await queue.push_task_tx(conn, Task("k", "rolled back"))
                    raise RuntimeError("roll back")
            with pytest.raises(TypeError, match="inside a transaction"):
                await queue.push_task_tx(conn, Task("k", "no transaction"))
        finally:
            await conn.close()
    payloads = [r[0] for r in db.fetch("SELECT payload FROM {schema}.tasks ORDER BY id")]
    assert payloads == ["committed", "batch"]


async def test_push_tx_in_sqlalchemy_async_session_on_asyncpg(db: Database) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    url = db.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_async_engine(url)
    try:
        async with AsyncQueue(db.dsn, schema=db.schema) as queue:
            queue.declare_kind("k", opts())
            async with AsyncSession(engine) as session, session.begin():
                await queue.push_task_tx(session, Task("k", "sqlalchemy on asyncpg"))
    finally:
        await engine.dispose()
    payloads = [r[0] for r in db.fetch("SELECT payload FROM {schema}.tasks")]
    assert payloads == ["sqlalchemy on asyncpg"]
