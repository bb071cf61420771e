"""SQLAlchemy 2 support: ``Queue(engine)`` / ``AsyncQueue(async_engine)`` executors, and the
``*_tx`` pushes on the driver connection under a SQLAlchemy ``Connection`` or ``Session`` (or
their async forms), in its open transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from pgqueue.errors import DatabaseUnavailable, PgQueueError
from pgqueue.store.executor import Operation, drive_async, drive_sync
from pgqueue.store.unavailable import describe, is_unavailable, lost_connection

T = TypeVar("T")


# --- executors over SQLAlchemy engines ---------------------------------------------------------
#
# Statements run on the driver connection under a pooled SQLAlchemy connection (psycopg 3, or
# asyncpg for async engines): SQLAlchemy lends its pool and its configuration (URL, pool size,
# pre-ping, events on connect), pgqueue's named statements go to the driver as they are. The
# SQLAlchemy connection is switched to AUTOCOMMIT and transactions are the driver's own, so the
# two never disagree about whether one is open.


def _check_driver(engine: Any, drivers: tuple[str, ...]) -> None:
    driver = engine.dialect.driver
    if engine.dialect.name != "postgresql" or driver not in drivers:
        raise TypeError(
            f"pgqueue runs SQLAlchemy engines on {' or '.join(drivers)}; this engine uses "
            f"{engine.dialect.name}+{driver} (use a postgresql+psycopg:// URL)"
        )


POOL_CHECKS = 8
"""Pooled connections found dead (and replaced) before a statement, at most, per call."""


def _translated(exc: Exception, sent: bool) -> Exception:
    """pgqueue's error for a lost or refused connection (SQLAlchemy wraps the driver's);
    ``exc`` itself for any other error."""
    if isinstance(exc, PgQueueError) or not is_unavailable(exc):
        return exc
    if sent:
        return lost_connection(exc)
    return DatabaseUnavailable(
        f"cannot connect to PostgreSQL through the SQLAlchemy engine: {describe(exc)}"
    )


class SqlAlchemyExecutor:
    """Blocking executor over a SQLAlchemy ``Engine`` using psycopg 3 (``postgresql+psycopg``).

    ``Queue(engine)`` builds one; its workers run on an ``AsyncEngine`` made from the same URL
    (:meth:`async_twin`).
    """

    def __init__(self, engine: Any) -> None:
        from sqlalchemy.engine import Engine

        if not isinstance(engine, Engine):
            raise TypeError(
                f"Queue needs a SQLAlchemy Engine, got {type(engine).__name__} "
                "(an AsyncEngine goes to AsyncQueue)"
            )
        _check_driver(engine, ("psycopg",))
        self.engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def run(self, op: Operation[T]) -> T:
        from .psycopg import alive, sync_fetcher

        sent = False
        try:
            for _ in range(POOL_CHECKS):
                with self._autocommit.connect() as conn:
                    driver: Any = conn.connection.driver_connection
                    if not alive(driver):  # the server closed it while it idled in the pool
                        conn.invalidate()
                        continue
                    sent = True
                    if op.transactional:
                        with driver.transaction():
                            return drive_sync(op, sync_fetcher(driver))
                    return drive_sync(op, sync_fetcher(driver))
            raise DatabaseUnavailable("every pooled connection of the engine was closed")
        except Exception as exc:
            raise _translated(exc, sent) from exc

    def async_twin(self, max_size: int) -> AsyncSqlAlchemyExecutor:
        """An async executor for the worker runtime: an ``AsyncEngine`` on the same URL."""
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(self.engine.url, pool_size=max_size, pool_pre_ping=True)
        return AsyncSqlAlchemyExecutor(engine, owned=True)

    def close(self) -> None:
        """The engine is the caller's: it stays open (``engine.dispose()`` is yours to call)."""


class AsyncSqlAlchemyExecutor:
    """Async executor over a SQLAlchemy ``AsyncEngine`` on psycopg 3 or asyncpg."""

    def __init__(self, engine: Any, *, owned: bool = False) -> None:
        from sqlalchemy.ext.asyncio import AsyncEngine

        if not isinstance(engine, AsyncEngine):
            raise TypeError(
                f"AsyncQueue needs a SQLAlchemy AsyncEngine, got {type(engine).__name__} "
                "(an Engine goes to Queue)"
            )
        _check_driver(engine, ("psycopg", "asyncpg"))
        self.engine = engine
        self._owned = owned
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def open(self) -> None:
        """Nothing to open: the engine's pool connects on first use."""

    async def run(self, op: Operation[T]) -> T:
        from .transactions import async_alive, async_fetcher

        sent = False
        try:
            for _ in range(POOL_CHECKS):
                async with self._autocommit.connect() as conn:
                    driver: Any = (await conn.get_raw_connection()).driver_connection
                    if not async_alive(driver):
                        await conn.invalidate()
                        continue
                    sent = True
                    fetch = async_fetcher(driver)
                    if op.transactional:
                        async with driver.transaction():
                            return await drive_async(op, fetch)
                    return await drive_async(op, fetch)
            raise DatabaseUnavailable("every pooled connection of the engine was closed")
        except Exception as exc:
            raise _translated(exc, sent) from exc

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        """LISTEN on a connection of the engine's pool, discarded afterwards (a connection
        that listened does not go back to the pool)."""
        async with self._autocommit.connect() as conn:
            try:
                driver = (await conn.get_raw_connection()).driver_connection
                async with _listen_on(driver, channel) as payloads:
                    yield payloads
            finally:
                await conn.invalidate()

    async def close(self) -> None:
        if self._owned:
            await self.engine.dispose()


_CLOSED = object()


@asynccontextmanager
async def _listen_on(driver: Any, channel: str) -> AsyncIterator[AsyncIterator[str]]:
    """Payloads of ``channel`` on an async driver connection (psycopg or asyncpg)."""
    if not type(driver).__module__.startswith("asyncpg"):
        await driver.execute(f'LISTEN "{channel}"')

        async def notifies() -> AsyncIterator[str]:
            async for notify in driver.notifies():
                yield notify.payload

        yield notifies()
        return
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        inbox.put_nowait(payload)

    def on_close(_conn: Any) -> None:
        inbox.put_nowait(_CLOSED)

    driver.add_termination_listener(on_close)
    await driver.add_listener(channel, on_notify)
    try:

        async def payloads() -> AsyncIterator[str]:
            while True:
                item = await inbox.get()
                if item is _CLOSED:
                    raise ConnectionError("the LISTEN connection was closed")
                yield item

        yield payloads()
    finally:
        driver.remove_termination_listener(on_close)
