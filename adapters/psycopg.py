"""psycopg 3 adapter: connections and pools, blocking and async."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgqueue.executor import Operation, Row, Statement, drive_async, drive_sync

from .sqlalchemy import async_driver_connection, driver_connection

T = TypeVar("T")


def _has_rows(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    # Cheaper than ``cursor.description``, which builds column objects on every call.
    result = cursor.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


def _rows(cursor: psycopg.Cursor[Any]) -> list[Row]:
    return cursor.fetchall() if _has_rows(cursor) else []


async def _arows(cursor: psycopg.AsyncCursor[Any]) -> list[Row]:
    return await cursor.fetchall() if _has_rows(cursor) else []


def sync_fetcher(conn: psycopg.Connection[Any]) -> Any:
    def fetch(statement: Statement) -> list[Row]:
        return _rows(conn.execute(statement.sql, statement.params))

    return fetch


def async_fetcher(conn: psycopg.AsyncConnection[Any]) -> Any:
    async def fetch(statement: Statement) -> list[Row]:
        return await _arows(await conn.execute(statement.sql, statement.params))

    return fetch


class PsycopgExecutor:
    """Blocking executor over a psycopg ``ConnectionPool`` (made from a DSN, or yours)."""

    def __init__(self, target: str | ConnectionPool, *, max_size: int = 4) -> None:
        if isinstance(target, ConnectionPool):
            self.pool, self._owned = target, False
        else:
            self.pool = ConnectionPool(
                target, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True}
            )
            self._owned = True
        self._opened = False
        self._open_lock = threading.Lock()
        # See AsyncPsycopgExecutor: one connection kept out of the pool for uncontended
        # single-statement work.
        self._sticky: psycopg.Connection[Any] | None = None
        self._sticky_lock = threading.Lock()

    @property
    def conninfo(self) -> str:
        return str(self.pool.conninfo)

    def _ensure_open(self) -> None:
        with self._open_lock:
            if not self._opened and self._owned:
                self.pool.open(wait=True)
            self._opened = True

    def run(self, op: Operation[T]) -> T:
        if not self._opened:
            self._ensure_open()
        if not op.transactional and self._sticky_lock.acquire(blocking=False):
            try:
                conn = self._sticky
                if conn is None or conn.broken or conn.closed:
                    conn = self._sticky = self.pool.getconn()
                if conn.autocommit:
                    try:
                        return drive_sync(op, sync_fetcher(conn))
                    except psycopg.OperationalError:
                        self._release_sticky()
                        raise
            finally:
                self._sticky_lock.release()
        with self.pool.connection() as conn:
            if op.transactional or not conn.autocommit:
                with conn.transaction():
                    return drive_sync(op, sync_fetcher(conn))
            return drive_sync(op, sync_fetcher(conn))

    def run_in(self, tx: Any, op: Operation[T]) -> T:
        return run_in_sync(tx, op)

    def _release_sticky(self) -> None:
        conn, self._sticky = self._sticky, None
        if conn is not None:
            self.pool.putconn(conn)  # the pool replaces it if it is broken

    def close(self) -> None:
        with self._sticky_lock:
            self._release_sticky()
        if self._owned and self._opened:
            self.pool.close()
        self._opened = False


def run_in_sync(tx: Any, op: Operation[T]) -> T:
    """Run ``op`` in the caller's open transaction: a psycopg ``Connection`` or cursor, or a
    SQLAlchemy ``Connection`` or ``Session`` using psycopg."""
    conn = driver_connection(tx)
    conn = getattr(conn, "connection", conn) if isinstance(conn, psycopg.Cursor) else conn
    if not isinstance(conn, psycopg.Connection):
        raise TypeError(
            f"push_*_tx needs a psycopg Connection or cursor, or a SQLAlchemy Connection or "
            f"Session on the psycopg driver; got {type(tx).__name__}"
        )
    return drive_sync(op, sync_fetcher(conn))


async def run_in_async(tx: Any, op: Operation[T]) -> T:
    """Run ``op`` in the caller's open transaction: a psycopg ``AsyncConnection`` or cursor, an
    asyncpg connection, or a SQLAlchemy ``AsyncConnection`` or ``AsyncSession`` on either."""
    conn = await async_driver_connection(tx)
    if type(conn).__module__.startswith("asyncpg"):
        from .asyncpg import run_in_asyncpg

        return await run_in_asyncpg(tx, op)
    conn = getattr(conn, "connection", conn) if isinstance(conn, psycopg.AsyncCursor) else conn
    if not isinstance(conn, psycopg.AsyncConnection):
        raise TypeError(
            f"push_*_tx needs a psycopg AsyncConnection or cursor, an asyncpg connection, or a "
            f"SQLAlchemy AsyncConnection or AsyncSession on either driver; got {type(tx).__name__}"
        )
    return await drive_async(op, async_fetcher(conn))


class AsyncPsycopgExecutor:
    """Async executor over a psycopg ``AsyncConnectionPool`` (made from a DSN, or yours)."""

    def __init__(self, target: str | AsyncConnectionPool, *, max_size: int = 8) -> None:
        if isinstance(target, AsyncConnectionPool):
            self.pool, self._owned = target, False
            self.conninfo = str(target.conninfo)
        else:
            self.conninfo = target
            self.pool = AsyncConnectionPool(
                target, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True}
            )
            self._owned = True
        self._opened = False
        # One connection kept checked out of the pool for single-statement work while nobody
        # else uses it: sequential pushes then skip the pool's per-call bookkeeping, which
        # costs about a fifth of a single push on a fast server.
        self._sticky: psycopg.AsyncConnection[Any] | None = None
        self._sticky_lock = asyncio.Lock()

    async def open(self) -> None:
        if not self._opened and self._owned:
            # No wait=True: a wait that times out closes the pool for good (a database down at
            # start would never be reached again), and concurrent waits trip an assertion.
            # Callers wait for their connection in getconn instead.
            await self.pool.open()
        self._opened = True

    async def run(self, op: Operation[T]) -> T:
        if not self._opened:
            await self.open()
        if not op.transactional and not self._sticky_lock.locked():
            async with self._sticky_lock:
                conn = self._sticky
                if conn is None or conn.broken or conn.closed:
                    conn = self._sticky = await self.pool.getconn()
                if conn.autocommit:
                    try:
                        return await drive_async(op, async_fetcher(conn))
                    except psycopg.OperationalError:
                        await self._release_sticky()
                        raise
        async with self.pool.connection() as conn:
            if op.transactional or not conn.autocommit:
                async with conn.transaction():
                    return await drive_async(op, async_fetcher(conn))
            return await drive_async(op, async_fetcher(conn))

    async def run_in(self, tx: Any, op: Operation[T]) -> T:
        return await run_in_async(tx, op)

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        try:
            await conn.execute(f'LISTEN "{channel}"')

            async def payloads() -> AsyncIterator[str]:
                async for notify in conn.notifies():
                    yield notify.payload

            yield payloads()
        finally:
            await conn.close()

    async def _release_sticky(self) -> None:
        conn, self._sticky = self._sticky, None
        if conn is not None:
            await self.pool.putconn(conn)  # the pool replaces it if it is broken

    async def close(self) -> None:
        async with self._sticky_lock:
            await self._release_sticky()
        if self._owned and self._opened:
            await self.pool.close()
        self._opened = False
