"""Benchmark driver for procrastinate.

Configuration: `PsycopgConnector` (psycopg 3 async pool, up to concurrency + 2 connections so
every concurrent job can finish without waiting for a connection, plus the LISTEN connection);
worker run with `concurrency=10`, `listen_notify=True`, default polling interval, and
`delete_jobs="successful"` so that, like pgqueue with a zero retention TTL and like pgqueuer,
finished jobs do not stay in the jobs table. The 64-pusher workloads share one app whose pool
has 64 connections: `defer_async` from asyncio tasks (enqueue_async64), and the blocking `defer`
on an app with a `SyncPsycopgConnector` from threads (enqueue_threads64).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib.metadata import version
from typing import Any

import harness
from procrastinate import App, PsycopgConnector, SyncPsycopgConnector

TASK_NAME = "noop"
QUEUE = "bench"
DELETE_JOBS = "successful"
UNFINISHED = "status IN ('todo', 'doing')"


def _make_app(dsn: str, pool_size: int, sync: bool = False) -> App:
    # The tasks are registered by explicit name in the process that runs them, so the
    # warning about an App defined in a __main__ module does not apply here.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    connector: PsycopgConnector | SyncPsycopgConnector
    if sync:
        connector = SyncPsycopgConnector(conninfo=dsn, min_size=1, max_size=pool_size)
    else:
        connector = PsycopgConnector(conninfo=dsn, min_size=1, max_size=pool_size)
    app = App(connector=connector)

    @app.task(name=TASK_NAME, queue=QUEUE)
    async def noop(**payload: Any) -> None:
        harness.task_started(payload)

    return app


class ProcrastinateAdapter(harness.Adapter):
    lib = "procrastinate"
    has_sync = True

    def __init__(self, dsn: str, concurrency: int) -> None:
        super().__init__(dsn, concurrency)
        self._pool_size = concurrency + 2
        self._app = _make_app(dsn, self._pool_size)
        self._task = self._app.tasks[TASK_NAME]

    def version(self) -> str:
        return version("procrastinate")

    def config(self) -> dict[str, Any]:
        return {
            "connector": "PsycopgConnector",
            "pool_max_size": self.concurrency + 2,
            "pool_max_size_64_pushers": harness.PUSHERS,
            "concurrency": self.concurrency,
            "listen_notify": True,
            "delete_jobs": DELETE_JOBS,
        }

    async def install(self) -> None:
        async with self._app.open_async():
            await self._app.schema_manager.apply_schema_async()

    async def open_producer(self) -> None:
        await self._app.open_async()

    async def open_concurrent_producer(self, pushers: int) -> None:
        self._pool_size = pushers
        self._app = _make_app(self.dsn, pushers)
        self._task = self._app.tasks[TASK_NAME]
        await self._app.open_async()

    def open_sync_producer(self, pushers: int) -> None:
        self._app = _make_app(self.dsn, pushers, sync=True)
        self._task = self._app.tasks[TASK_NAME]
        self._app.open()

    def push_one_sync(self, payload: dict[str, Any]) -> None:
        self._task.defer(**payload)

    def close_sync_producer(self) -> None:
        self._app.close()

    async def push_one(self, payload: dict[str, Any]) -> None:
        await self._task.defer_async(**payload)

    async def push_many(self, payloads: list[dict[str, Any]]) -> None:
        await self._task.batch_defer_async(*payloads)

    async def close_producer(self) -> None:
        await self._app.close_async()

    async def run_worker(self, stop: asyncio.Event) -> None:
        async with self._app.open_async():
            worker = asyncio.create_task(
                self._app.run_worker_async(
                    queues=[QUEUE],
                    concurrency=self.concurrency,
                    wait=True,
                    listen_notify=True,
                    delete_jobs=DELETE_JOBS,
                    install_signal_handlers=False,
                )
            )
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait({worker, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not worker.done():
                # Cancelling run_worker_async is procrastinate's graceful stop: the worker
                # stops fetching and lets running jobs finish.
                worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def unfinished_sql(self) -> str:
        return f"SELECT count(*) FROM procrastinate_jobs WHERE {UNFINISHED}"

    def has_unfinished_sql(self) -> str:
        return f"SELECT EXISTS (SELECT FROM procrastinate_jobs WHERE {UNFINISHED})"


if __name__ == "__main__":
    harness.main(ProcrastinateAdapter, __file__)
