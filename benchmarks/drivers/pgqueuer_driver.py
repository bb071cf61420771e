"""Benchmark driver for pgqueuer.

Configuration: one asyncpg connection per process (`AsyncpgDriver`, as in pgqueuer's own
examples); default durable tables; the worker is a `QueueManager` run with
`batch_size=concurrency` (10, also pgqueuer's default) and no global cap on in-flight jobs.
Finished jobs are deleted from the queue table by pgqueuer itself (moved to its log table).
The 64-pusher workloads: enqueue_async64 shares one `AsyncpgPoolDriver` over an asyncpg pool of
64 connections; enqueue_threads64 shares one `SyncQueries(SyncPsycopgDriver(conn))`, pgqueuer's
blocking API, which takes one autocommit psycopg connection (it has no pool setting).
"""

from __future__ import annotations

import asyncio
import json
from importlib.metadata import version
from typing import Any

import asyncpg
import harness
import psycopg
from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver, SyncPsycopgDriver
from pgqueuer.models import Job
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries, SyncQueries

ENTRYPOINT = "noop"


class PgqueuerAdapter(harness.Adapter):
    lib = "pgqueuer"
    has_sync = True

    def __init__(self, dsn: str, concurrency: int) -> None:
        super().__init__(dsn, concurrency)
        self._conn: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._queries: Queries | None = None
        self._sync_conn: psycopg.Connection | None = None
        self._sync_queries: SyncQueries | None = None
        self._pushers: int | None = None

    def version(self) -> str:
        return version("pgqueuer")

    def config(self) -> dict[str, Any]:
        return {
            "driver": "AsyncpgDriver (one asyncpg connection per process)",
            "batch_size": self.concurrency,
            "max_concurrent_tasks": None,
            "64_pushers": f"asyncpg pool of {harness.PUSHERS} (async);"
            " one psycopg connection (sync: SyncQueries has no pool)",
        }

    async def install(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    async def open_producer(self) -> None:
        self._conn = await asyncpg.connect(self.dsn)
        self._queries = Queries(AsyncpgDriver(self._conn))

    async def open_concurrent_producer(self, pushers: int) -> None:
        self._pushers = pushers
        self._pool = await asyncpg.create_pool(self.dsn, min_size=pushers, max_size=pushers)
        self._queries = Queries(AsyncpgPoolDriver(self._pool))

    def open_sync_producer(self, pushers: int) -> None:
        self._pushers = pushers
        self._sync_conn = psycopg.connect(self.dsn, autocommit=True)
        self._sync_queries = SyncQueries(SyncPsycopgDriver(self._sync_conn))

    def push_one_sync(self, payload: dict[str, Any]) -> None:
        assert self._sync_queries is not None
        self._sync_queries.enqueue(ENTRYPOINT, json.dumps(payload).encode())

    def close_sync_producer(self) -> None:
        if self._sync_conn is not None:
            self._sync_conn.close()
            self._sync_conn = None
            self._sync_queries = None

    async def push_one(self, payload: dict[str, Any]) -> None:
        assert self._queries is not None
        await self._queries.enqueue(ENTRYPOINT, json.dumps(payload).encode())

    async def push_many(self, payloads: list[dict[str, Any]]) -> None:
        assert self._queries is not None
        count = len(payloads)
        await self._queries.enqueue(
            [ENTRYPOINT] * count,
            [json.dumps(p).encode() for p in payloads],
            [0] * count,
        )

    async def close_producer(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self._queries = None

    async def run_worker(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.dsn)
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint(ENTRYPOINT)
        async def noop(job: Job) -> None:
            harness.task_started(json.loads(job.payload) if job.payload else None)

        async def stop_when_asked() -> None:
            await stop.wait()
            qm.shutdown.set()

        stopper = asyncio.create_task(stop_when_asked())
        try:
            await qm.run(batch_size=self.concurrency)
        finally:
            stopper.cancel()
            if not conn.is_closed():
                await conn.close()

    def unfinished_sql(self) -> str:
        return f"SELECT count(*) FROM pgqueuer WHERE entrypoint = '{ENTRYPOINT}'"

    def has_unfinished_sql(self) -> str:
        return f"SELECT EXISTS (SELECT FROM pgqueuer WHERE entrypoint = '{ENTRYPOINT}')"


if __name__ == "__main__":
    harness.main(PgqueuerAdapter, __file__)
