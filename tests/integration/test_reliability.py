"""Reliability on a real database: results written after a long write outage, leases renewed
by the heartbeat, an abort after a timed-out drain, a silent LISTEN connection replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Generator
from typing import Any

import psycopg
import pytest

from pgqueue import AsyncQueue, KindOptions, LoopOptions, Task
from pgqueue.adapters.psycopg import AsyncPsycopgExecutor
from pgqueue.store.executor import Operation, Statement
from tests.conftest import Database
from tests.helpers import Recorder, wait_until
from tests.proxy import TcpProxy


class FlakyWrites:
    """An executor whose result writes fail while ``broken`` is set (claims still work)."""

    def __init__(self, dsn: str, **kwargs: Any) -> None:
        self.inner = AsyncPsycopgExecutor(dsn, **kwargs)
        self.broken = False
        self.failed_writes = 0
        self.record_sql = ""

    def _guard(self, steps: Generator[Statement, Any, Any]) -> Generator[Statement, Any, Any]:
        statement = next(steps)
        while True:
            if self.broken and "claim_token = r.token" in statement.sql:
                self.failed_writes += 1
                raise psycopg.OperationalError("injected: the write did not reach the server")
            rows = yield statement
            try:
                statement = steps.send(rows)
            except StopIteration as done:
                return done.value

    async def run(self, op: Operation[Any]) -> Any:
        return await self.inner.run(Operation(self._guard(op.steps), op.transactional))

    def listen(self, channel: str) -> Any:
        return self.inner.listen(channel)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()


async def test_a_result_is_written_after_an_outage_longer_than_the_lease(db: Database) -> None:
    executor = FlakyWrites(db.dsn)
    queue = AsyncQueue(executor, schema=db.schema)
    finished = asyncio.Event()

    async def handler(envelope: Any) -> None:
        executor.broken = True  # the write of this result fails for three leases
        finished.set()

    loop = LoopOptions(poll_period=0.2, lease_margin=1.0, max_db_retry_delay=0.2)
    queue.register_kind("k", handler, KindOptions(attempt_timeout=1, max_attempts=1, loop=loop))
    recorder = Recorder(queue)
    async with queue:
        task_id = await queue.push_task(Task("k"))
        await queue.start()
        async with asyncio.timeout(10):
            await finished.wait()
        await asyncio.sleep(3)  # the outage: three leases
        assert executor.failed_writes >= 3
        executor.broken = False
        await recorder.await_status(task_id, "succeeded")  # type: ignore[arg-type]
    row = db.fetch("SELECT status::text, claim_token FROM {schema}.tasks")
    assert row == [("succeeded", None)]


async def test_a_long_attempt_keeps_its_claim_while_another_process_waits(db: Database) -> None:
    # Lease 1 s, attempt 4 s: without the heartbeat the other queue re-claims it after 1 s.
    loop = LoopOptions(poll_period=0.1, lease_margin=1.0)
    runs: list[tuple[str, int]] = []
    done = asyncio.Event()

    def make(name: str) -> AsyncQueue:
        async def handler(envelope: Any) -> None:
            runs.append((name, envelope.attempt))
            await asyncio.sleep(4)
            done.set()

        queue = AsyncQueue(db.dsn, schema=db.schema)
        queue.register_kind("k", handler, KindOptions(attempt_timeout=10, loop=loop))
        return queue

    first, second = make("first"), make("second")
    recorder = Recorder(first)
    async with first, second:
        task_id = await first.push_task(Task("k"))
        await first.start()
        await recorder.await_(lambda r: task_id in r.claimed)
        await second.start()
        await recorder.await_status(task_id, "succeeded")  # type: ignore[arg-type]
    assert runs == [("first", 1)]
    assert done.is_set()


async def test_async_worker_aborts_after_a_drain_that_timed_out(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgqueue.cli import main as cli

    started = asyncio.Event()

    async def long(envelope: Any) -> None:
        started.set()
        await asyncio.sleep(60)

    queue = AsyncQueue(db.dsn, schema=db.schema)
    queue.register_kind(
        "k", long, KindOptions(attempt_timeout=60, loop=LoopOptions(poll_period=0.2))
    )
    monkeypatch.setattr(cli, "_drain_bound", lambda queue: 0.5)
    task_id = await queue.push_task(Task("k"))
    worker = asyncio.create_task(cli.run_async_worker(queue))
    async with asyncio.timeout(10):
        await started.wait()
    os.kill(os.getpid(), signal.SIGTERM)  # the worker's handler: drain, then abort
    async with asyncio.timeout(20):
        await worker
    status, token, elapsed = db.fetch(
        "SELECT status::text, claim_token, attempts_elapsed FROM {schema}.tasks WHERE id = %s",
        (task_id,),
    )[0]
    assert (status, token, elapsed) == ("new", None, 0)  # handed back, attempt refunded


async def test_a_silent_listen_connection_is_replaced_within_seconds(db: Database) -> None:
    proxy = TcpProxy.for_dsn(db.dsn)
    try:
        executor = AsyncPsycopgExecutor(db.dsn, listen_dsn=proxy.dsn(db.dsn))
        queue = AsyncQueue(executor, schema=db.schema)
        done: dict[int, float] = {}

        async def handler(envelope: Any) -> None:
            done[envelope.id] = time.monotonic()

        # A poll period of a minute: only a notification picks a task up quickly.
        queue.register_kind(
            "k", handler, KindOptions(attempt_timeout=5, loop=LoopOptions(poll_period=60))
        )
        recorder = Recorder(queue)
        async with queue:
            await queue.start()
            await queue.wait_listening()
            runtime = queue._runtime
            assert runtime is not None
            proxy.blackhole(new_connections=False)  # the open socket goes silent
            silenced = time.monotonic()
            await asyncio.to_thread(wait_until, lambda: runtime.listener_restarts >= 1, 15)
            detected = time.monotonic() - silenced
            await queue.wait_listening()
            pushed = time.monotonic()
            task_id = await queue.push_task(Task("k"))
            await recorder.await_status(task_id, "succeeded", timeout=20)  # type: ignore[arg-type]
            latency = done[task_id] - pushed  # type: ignore[index]
        print(f"silent listener replaced after {detected:.1f}s; pickup {latency * 1000:.0f} ms")
        assert detected < 10
        assert latency < 5  # far below the poll period: a notification woke the worker
    finally:
        proxy.close()


def with_application_name(dsn: str, name: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, application_name=name)


def listeners_named(db: Database, name: str) -> list[str]:
    return [
        query
        for (query,) in db.fetch(
            "SELECT query FROM pg_stat_activity WHERE application_name = %s", (name,)
        )
    ]


def test_both_queues_take_a_listen_dsn_for_their_one_listen_connection(db: Database) -> None:
    """Behind PgBouncer in transaction mode LISTEN needs a direct DSN; both facades take one
    (the sync one once could not: its workers only polled there)."""
    from pgqueue import Queue

    direct = with_application_name(db.dsn, "pgq-sync-listener")
    with Queue(db.dsn, schema=db.schema, listen_dsn=direct) as queue:
        queue.register_kind("k", lambda envelope: None, KindOptions(attempt_timeout=5.0))
        queue.start()
        queue.wait_listening(10)
        queries = listeners_named(db, "pgq-sync-listener")
        assert len(queries) == 1 and queries[0].startswith("LISTEN"), queries

    async def main() -> None:
        direct = with_application_name(db.dsn, "pgq-async-listener")
        async with AsyncQueue(db.dsn, schema=db.schema, listen_dsn=direct) as queue:
            queue.register_kind("k", lambda envelope: None, KindOptions(attempt_timeout=5.0))
            await queue.start()
            await queue.wait_listening(10)
            queries = listeners_named(db, "pgq-async-listener")
            assert len(queries) == 1 and queries[0].startswith("LISTEN"), queries

    asyncio.run(main())
    assert listeners_named(db, "pgq-sync-listener") == []  # closed with its queue


def test_listen_dsn_with_a_ready_executor_is_refused(db: Database) -> None:
    executor = AsyncPsycopgExecutor(db.dsn)
    with pytest.raises(TypeError, match="give it to the executor you build"):
        AsyncQueue(executor, schema=db.schema, listen_dsn=db.dsn)
