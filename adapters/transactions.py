"""Running an operation in a caller's open transaction, whichever driver it is on.

``push_task_tx`` accepts a psycopg connection or cursor, an asyncpg connection, or a SQLAlchemy
connection or session over either driver, whatever driver the queue itself uses. This module
decides which driver the caller's connection belongs to (with :mod:`.host`) and hands it to that
driver's module. It is the only adapter module that knows both drivers, and no driver module
imports it, so the drivers never import each other. asyncpg is an optional extra, imported only
when a caller's connection is an asyncpg one.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pgqueue.store.executor import Operation

from .host import async_driver_connection, is_asyncpg
from .psycopg import alive as psycopg_alive
from .psycopg import async_fetcher as psycopg_async_fetcher
from .psycopg import run_in_psycopg, run_in_psycopg_async

T = TypeVar("T")


def run_in_sync(tx: Any, op: Operation[T]) -> T:
    """Run ``op`` in the caller's open transaction (psycopg, or SQLAlchemy over psycopg: the
    only blocking driver pgqueue supports)."""
    return run_in_psycopg(tx, op)


async def run_in_async(tx: Any, op: Operation[T]) -> T:
    """Run ``op`` in the caller's open transaction: a psycopg ``AsyncConnection`` or cursor, an
    asyncpg connection, or a SQLAlchemy ``AsyncConnection`` or ``AsyncSession`` on either."""
    conn = await async_driver_connection(tx)
    if is_asyncpg(conn):
        from .asyncpg import run_in_asyncpg

        return await run_in_asyncpg(tx, op)
    return await run_in_psycopg_async(tx, conn, op)


def async_fetcher(driver: Any) -> Any:
    """The statement fetcher of an async driver connection, whichever driver it is."""
    if is_asyncpg(driver):
        from .asyncpg import fetcher as asyncpg_fetcher

        return asyncpg_fetcher(driver)
    return psycopg_async_fetcher(driver)


def async_alive(driver: Any) -> bool:
    """Whether an async driver connection idling in a pool is still open (no round trip):
    :func:`pgqueue.adapters.psycopg.alive` or its asyncpg twin, by driver."""
    if is_asyncpg(driver):
        from .asyncpg import alive as asyncpg_alive

        return bool(asyncpg_alive(driver))
    return bool(psycopg_alive(driver))
