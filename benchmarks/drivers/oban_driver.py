"""Benchmark driver for oban (oban-py, the Python port of Elixir's Oban; Python >= 3.12).

Configuration: a psycopg `AsyncConnectionPool` per process (`Oban.create_pool`, up to
concurrency + 2 connections for a worker, 64 for the 64-pusher producer); schema installed with
`oban.schema.install`; a worker is `Oban(pool=..., queues={"bench": 10})` (server mode, with its
default leadership, stager, pruner and notifier); pushes with `Oban.enqueue` and
`Oban.enqueue_many`. Oban has only an async API, so enqueue_threads64 is n/a. Finished jobs stay
in `oban_jobs` with state `completed` (oban's design; its pruner deletes them after `max_age`,
a day by default).
"""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import version
from typing import Any

import harness
from oban import Job, Oban, worker
from oban.schema import install as install_schema
from psycopg_pool import AsyncConnectionPool

QUEUE = "bench"
UNFINISHED = f"queue = '{QUEUE}' AND state IN ('available', 'scheduled', 'executing', 'retryable')"


@worker(queue=QUEUE, max_attempts=3)
class Noop:
    async def process(self, job: Job) -> None:
        harness.task_started(job.args)


class ObanAdapter(harness.Adapter):
    lib = "oban"

    def __init__(self, dsn: str, concurrency: int) -> None:
        super().__init__(dsn, concurrency)
        self._pool: AsyncConnectionPool | None = None
        self._oban: Oban | None = None
        self._pool_size = concurrency + 2

    def version(self) -> str:
        return version("oban")

    def config(self) -> dict[str, Any]:
        return {
            "pool": "psycopg AsyncConnectionPool",
            "pool_max_size": self.concurrency + 2,
            "pool_max_size_64_pushers": harness.PUSHERS,
            "queues": {QUEUE: self.concurrency},
            "max_attempts": 3,
            "pruner": "default (completed jobs kept 1 day)",
        }

    async def _open_pool(self, size: int) -> AsyncConnectionPool:
        return await Oban.create_pool(self.dsn, min_size=1, max_size=size)

    async def install(self) -> None:
        pool = await self._open_pool(1)
        try:
            await install_schema(pool)
        finally:
            await pool.close()

    async def open_producer(self) -> None:
        self._pool = await self._open_pool(self._pool_size)
        self._oban = Oban(pool=self._pool)  # no queues: client mode, it only enqueues

    async def open_concurrent_producer(self, pushers: int) -> None:
        self._pool_size = pushers
        await self.open_producer()

    async def push_one(self, payload: dict[str, Any]) -> None:
        assert self._oban is not None
        await self._oban.enqueue(Noop.new(payload))  # type: ignore[attr-defined]

    async def push_many(self, payloads: list[dict[str, Any]]) -> None:
        assert self._oban is not None
        await self._oban.enqueue_many([Noop.new(p) for p in payloads])  # type: ignore[attr-defined]

    async def close_producer(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
            self._oban = None

    async def run_worker(self, stop: asyncio.Event) -> None:
        logging.getLogger("oban").setLevel(logging.WARNING)
        pool = await self._open_pool(self._pool_size)
        try:
            oban = Oban(pool=pool, queues={QUEUE: self.concurrency})
            await oban.start()
            try:
                await stop.wait()
            finally:
                await oban.stop()
        finally:
            await pool.close()

    def unfinished_sql(self) -> str:
        return f"SELECT count(*) FROM oban_jobs WHERE {UNFINISHED}"

    def has_unfinished_sql(self) -> str:
        return f"SELECT EXISTS (SELECT FROM oban_jobs WHERE {UNFINISHED})"


if __name__ == "__main__":
    harness.main(ObanAdapter, __file__)
