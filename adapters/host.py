"""What every driver module shares about a caller's connection, importing no driver module.

It unwraps SQLAlchemy objects to the DBAPI connection under them, tells an asyncpg connection
from a psycopg one by its type's module, and describes a DSN without its password. The driver
modules (``psycopg``, ``asyncpg``) import this module and never each other; running an
operation in a caller's transaction, whichever driver it is on, is :mod:`.transactions`.
"""

from __future__ import annotations

from typing import Any

from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import ProgrammingError


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
