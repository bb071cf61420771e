"""Which driver a caller's transaction belongs to, and running an operation inside it.

``push_task_tx`` accepts a psycopg connection or cursor, an asyncpg connection, or a SQLAlchemy
connection or session over either driver, whatever driver the queue itself uses. This neutral
module unwraps SQLAlchemy objects, decides which driver the connection belongs to and hands it
to that driver's module, so the driver modules (``psycopg``, ``asyncpg``) never import each
other: each knows only its own driver. asyncpg is an optional extra, imported only when a
caller's connection is an asyncpg one.
"""

from __future__ import annotations

from typing import Any, TypeVar

from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import ProgrammingError

from pgqueue.store.executor import Operation

T = TypeVar("T")


def describe_target(conninfo: str) -> str:
    """Where a DSN points (host, port, database, user), without its password."""
    try:
        params = conninfo_to_dict(conninfo)
    except ProgrammingError:
        return "an unparsable DSN"
    shown = [f"{key}={params[key]}" for key in ("host", "port", "dbname", "user") if key in params]
    return " ".join(shown) or "the default local server"


def driver_connection(tx: Any) -> Any:
    """The DBAPI connection under a SQLAlchemy ``Connection`` or ``Session``; ``tx`` itself
    when it is not a SQLAlchemy object."""
    module = type(tx).__module__
    if not module.startswith("sqlalchemy"):
        return tx
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    if isinstance(tx, Session):
        tx = tx.connection()  # joins (or begins) the session's transaction
    if isinstance(tx, Connection):
        if not tx.in_transaction():
            tx.begin()  # what SQLAlchemy's autobegin would do: the caller's commit covers us
        return tx.connection.driver_connection
    raise TypeError(f"cannot push in a {type(tx).__name__}; pass a Connection or a Session")


async def async_driver_connection(tx: Any) -> Any:
    """The async DBAPI connection under a SQLAlchemy ``AsyncConnection`` or ``AsyncSession``."""
    module = type(tx).__module__
    if not module.startswith("sqlalchemy"):
        return tx
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(tx, AsyncSession):
        tx = await tx.connection()
    if isinstance(tx, AsyncConnection):
        if not tx.in_transaction():
            await tx.begin()
        raw = await tx.get_raw_connection()
        return raw.driver_connection
    raise TypeError(
        f"cannot push in a {type(tx).__name__}; pass an AsyncConnection or an AsyncSession"
    )


def is_asyncpg(conn: Any) -> bool:
    """True for an asyncpg connection (or pool proxy), without importing asyncpg."""
    return type(conn).__module__.startswith("asyncpg")


def run_in_sync(tx: Any, op: Operation[T]) -> T:
    """Run ``op`` in the caller's open transaction (psycopg, or SQLAlchemy over psycopg: the
    only blocking driver pgqueue supports)."""
    from .psycopg import run_in_psycopg

    return run_in_psycopg(tx, op)


async def run_in_async(tx: Any, op: Operation[T]) -> T:
    """Run ``op`` in the caller's open transaction: a psycopg ``AsyncConnection`` or cursor, an
    asyncpg connection, or a SQLAlchemy ``AsyncConnection`` or ``AsyncSession`` on either."""
    conn = await async_driver_connection(tx)
    if is_asyncpg(conn):
        from .asyncpg import run_in_asyncpg

        return await run_in_asyncpg(tx, op)
    from .psycopg import run_in_psycopg_async

    return await run_in_psycopg_async(tx, conn, op)


def async_fetcher(driver: Any) -> Any:
    """The statement fetcher of an async driver connection, whichever driver it is."""
    if is_asyncpg(driver):
        from .asyncpg import _fetcher

        return _fetcher(driver)
    from .psycopg import async_fetcher as psycopg_fetcher

    return psycopg_fetcher(driver)
