"""Benchmark driver for chancy.

Configuration: default plugins and connection pool; one queue declared with the asyncio
executor (`Chancy.Executor.Async`, the executor chancy recommends for I/O-bound jobs),
`concurrency=10` per worker and `eager_polling=True` (fetch again as soon as a job completes;
without it a worker fetches at most `concurrency` jobs per wake-up or 5 s poll). Chancy's logger
is set to WARNING because at its default INFO level it logs a line per job. Finished jobs stay
in the table with state `succeeded` (chancy's design; its pruner removes them later).
The 64-pusher workloads share one `Chancy(dsn, max_connection_pool_size=64)`: `push` from
asyncio tasks (enqueue_async64) and its blocking `sync_push` from threads (enqueue_threads64).
"""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import version
from pathlib import Path
from typing import Any

import harness
from chancy import Chancy, Job, Queue, Worker

QUEUE = "bench"
# Chancy stores an importable name; the worker process imports this module under its file name.
JOB_FUNC = f"{Path(__file__).stem}.noop"
UNFINISHED = f"queue = '{QUEUE}' AND state IN ('pending', 'retrying', 'running')"


async def noop(**payload: Any) -> None:
    harness.task_started(payload)


def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("chancy.bench")
    logger.setLevel(logging.WARNING)
    return logger


class ChancyAdapter(harness.Adapter):
    lib = "chancy"
    has_sync = True

    def __init__(self, dsn: str, concurrency: int) -> None:
        super().__init__(dsn, concurrency)
        self._chancy = Chancy(dsn, log=_quiet_logger())

    def version(self) -> str:
        return version("chancy")

    def config(self) -> dict[str, Any]:
        return {
            "executor": "Chancy.Executor.Async",
            "concurrency": self.concurrency,
            "eager_polling": True,
            "plugins": "defaults",
            "pool_max_size": 10,
            "pool_max_size_64_pushers": harness.PUSHERS,
        }

    async def install(self) -> None:
        async with self._chancy:
            await self._chancy.migrate()
            await self._chancy.declare(
                Queue(
                    name=QUEUE,
                    concurrency=self.concurrency,
                    executor=Chancy.Executor.Async,
                    eager_polling=True,
                ),
                upsert=True,
            )

    async def open_producer(self) -> None:
        await self._chancy.pool.open()

    def _job(self, payload: dict[str, Any]) -> Job:
        return Job(func=JOB_FUNC, queue=QUEUE, kwargs=payload)

    async def open_concurrent_producer(self, pushers: int) -> None:
        self._chancy = Chancy(self.dsn, log=_quiet_logger(), max_connection_pool_size=pushers)
        await self._chancy.pool.open()

    def open_sync_producer(self, pushers: int) -> None:
        self._chancy = Chancy(self.dsn, log=_quiet_logger(), max_connection_pool_size=pushers)
        self._chancy.sync_pool.open()

    def push_one_sync(self, payload: dict[str, Any]) -> None:
        self._chancy.sync_push(self._job(payload))

    def close_sync_producer(self) -> None:
        self._chancy.sync_pool.close()

    async def push_one(self, payload: dict[str, Any]) -> None:
        await self._chancy.push(self._job(payload))

    async def push_many(self, payloads: list[dict[str, Any]]) -> None:
        jobs = [self._job(p) for p in payloads]
        async for _ in self._chancy.push_many(jobs, batch_size=len(jobs)):
            pass

    async def close_producer(self) -> None:
        await self._chancy.pool.close()

    async def run_worker(self, stop: asyncio.Event) -> None:
        async with self._chancy:
            worker = Worker(self._chancy, register_signal_handlers=False)
            await worker.start()
            try:
                await stop.wait()
            finally:
                await worker.stop()

    def unfinished_sql(self) -> str:
        return f"SELECT count(*) FROM chancy_jobs WHERE {UNFINISHED}"

    def has_unfinished_sql(self) -> str:
        return f"SELECT EXISTS (SELECT FROM chancy_jobs WHERE {UNFINISHED})"


if __name__ == "__main__":
    harness.main(ChancyAdapter, __file__)
