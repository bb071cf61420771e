"""Every shipped executor behind one interface, for the driver conformance suite.

Each ``Driver`` wraps an executor as users build it (from a DSN, from their pool, from their
SQLAlchemy engine) and knows how to open the host's own transaction object for ``run_in``.
Blocking executors are called directly: the suite's tests are async only so the async ones
share them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from pgqueue.adapters.transactions import run_in_async, run_in_sync
from pgqueue.migrate import sqlalchemy_url
from pgqueue.store.executor import Operation
from tests.conftest import Database

T = TypeVar("T")


@dataclass
class Driver:
    """One executor under test."""

    name: str
    executor: Any
    is_async: bool
    # An async context manager yielding a host transaction object; committed when the block
    # ends normally (``commit=True``), rolled back otherwise.
    host_tx: Callable[[bool], AbstractAsyncContextManager[Any]]
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    executor_dsn: str = ""  # blocking executors: where to LISTEN for their notifications

    async def run(self, op: Operation[T]) -> T:
        if self.is_async:
            return await self.executor.run(op)  # type: ignore[no-any-return]
        return self.executor.run(op)  # type: ignore[no-any-return]

    async def run_in(self, tx: Any, op: Operation[T]) -> T:
        if self.is_async:
            return await run_in_async(tx, op)
        return run_in_sync(tx, op)

    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """The executor's own LISTEN (async executors); blocking executors get a psycopg
        listener on the same server, to check their notifications are delivered."""
        if self.is_async:
            return self.executor.listen(channel)  # type: ignore[no-any-return]
        return _psycopg_listen(self.executor_dsn, channel)

    async def close(self) -> None:
        if self.is_async:
            await self.executor.close()
        else:
            self.executor.close()
        for cleanup in reversed(self.cleanups):
            await cleanup()


@asynccontextmanager
async def _psycopg_listen(dsn: str, channel: str) -> AsyncIterator[AsyncIterator[str]]:
    from pgqueue.adapters.psycopg import AsyncPsycopgExecutor

    listener = AsyncPsycopgExecutor(dsn)
    async with listener.listen(channel) as payloads:
        yield payloads


def _psycopg_host_tx(dsn: str) -> Callable[[bool], AbstractAsyncContextManager[Any]]:
    import psycopg

    @asynccontextmanager
    async def host_tx(commit: bool) -> AsyncIterator[Any]:
        with psycopg.connect(dsn) as conn:
            yield conn
            conn.commit() if commit else conn.rollback()

    return host_tx


def _psycopg_async_host_tx(dsn: str) -> Callable[[bool], AbstractAsyncContextManager[Any]]:
    import psycopg

    @asynccontextmanager
    async def host_tx(commit: bool) -> AsyncIterator[Any]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            yield conn
            await (conn.commit() if commit else conn.rollback())

    return host_tx


def _asyncpg_host_tx(dsn: str) -> Callable[[bool], AbstractAsyncContextManager[Any]]:
    import asyncpg

    @asynccontextmanager
    async def host_tx(commit: bool) -> AsyncIterator[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            tx = conn.transaction()
            await tx.start()
            yield conn
            await (tx.commit() if commit else tx.rollback())
        finally:
            await conn.close()

    return host_tx


async def make_driver(name: str, dsn: str) -> Driver:
    """Build the executor ``name`` on ``dsn`` the way a user would."""
    import asyncpg
    from psycopg_pool import AsyncConnectionPool, ConnectionPool
    from sqlalchemy import create_engine
    from sqlalchemy.ext.asyncio import create_async_engine

    from pgqueue.adapters.asyncpg import AsyncpgExecutor
    from pgqueue.adapters.psycopg import AsyncPsycopgExecutor, PsycopgExecutor
    from pgqueue.adapters.sqlalchemy import AsyncSqlAlchemyExecutor, SqlAlchemyExecutor

    if name == "psycopg":
        return Driver(name, PsycopgExecutor(dsn), False, _psycopg_host_tx(dsn), executor_dsn=dsn)
    if name == "psycopg-pool":
        pool = ConnectionPool(dsn, min_size=1, max_size=2, open=True)

        async def close_pool() -> None:
            pool.close()

        driver = Driver(name, PsycopgExecutor(pool), False, _psycopg_host_tx(dsn), executor_dsn=dsn)
        driver.cleanups.append(close_pool)
        return driver
    if name == "psycopg-async":
        return Driver(name, AsyncPsycopgExecutor(dsn), True, _psycopg_async_host_tx(dsn))
    if name == "psycopg-async-pool":
        apool = AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False)
        await apool.open()
        driver = Driver(name, AsyncPsycopgExecutor(apool), True, _psycopg_async_host_tx(dsn))
        driver.cleanups.append(apool.close)
        return driver
    if name == "asyncpg":
        return Driver(name, AsyncpgExecutor(dsn), True, _asyncpg_host_tx(dsn))
    if name == "asyncpg-pool":
        pgpool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        driver = Driver(name, AsyncpgExecutor(pgpool), True, _asyncpg_host_tx(dsn))
        driver.cleanups.append(pgpool.close)
        return driver
    if name == "sqlalchemy":
        engine = create_engine(sqlalchemy_url(dsn), pool_size=2)

        @asynccontextmanager
        async def sa_tx(commit: bool) -> AsyncIterator[Any]:
            with engine.connect() as conn:
                yield conn
                conn.commit() if commit else conn.rollback()

        async def dispose() -> None:
            engine.dispose()

        driver = Driver(name, SqlAlchemyExecutor(engine), False, sa_tx, executor_dsn=dsn)
        driver.cleanups.append(dispose)
        return driver
    if name in ("sqlalchemy-async-psycopg", "sqlalchemy-async-asyncpg"):
        url = sqlalchemy_url(dsn)
        if name.endswith("asyncpg"):
            url = url.replace("postgresql+psycopg://", "postgresql+asyncpg://", 1)
        aengine = create_async_engine(url, pool_size=2)

        @asynccontextmanager
        async def asa_tx(commit: bool) -> AsyncIterator[Any]:
            async with aengine.connect() as conn:
                yield conn
                await (conn.commit() if commit else conn.rollback())

        driver = Driver(name, AsyncSqlAlchemyExecutor(aengine), True, asa_tx)
        driver.cleanups.append(aengine.dispose)
        return driver
    if name == "failfast":
        from pgqueue.adapters.failfast import FailFastExecutor

        return Driver(name, FailFastExecutor(dsn), False, _psycopg_host_tx(dsn), executor_dsn=dsn)
    if name == "failfast-async":
        from pgqueue.adapters.failfast import AsyncFailFastExecutor

        return Driver(name, AsyncFailFastExecutor(dsn), True, _psycopg_async_host_tx(dsn))
    if name == "replica":
        from pgqueue.adapters.replica import ReplicaExecutor

        # The "replica" is the primary itself: not in recovery, so never read; reads still
        # take the routing path and fall back to the primary.
        executor = ReplicaExecutor(dsn, [dsn])
        return Driver(name, executor, False, _psycopg_host_tx(dsn), executor_dsn=dsn)
    if name == "replica-async":
        from pgqueue.adapters.replica import AsyncReplicaExecutor

        return Driver(name, AsyncReplicaExecutor(dsn, [dsn]), True, _psycopg_async_host_tx(dsn))
    raise ValueError(f"unknown driver {name!r}")


DRIVERS = [
    "psycopg",
    "psycopg-pool",
    "psycopg-async",
    "psycopg-async-pool",
    "asyncpg",
    "asyncpg-pool",
    "sqlalchemy",
    "sqlalchemy-async-psycopg",
    "sqlalchemy-async-asyncpg",
    "failfast",  # the executors of shards and replicas given as DSNs
    "failfast-async",
    "replica",
    "replica-async",
]


@pytest.fixture(params=DRIVERS)
async def driver(request: Any, db: Database) -> AsyncIterator[Driver]:
    built = await make_driver(request.param, db.dsn)
    try:
        yield built
    finally:
        await built.close()
