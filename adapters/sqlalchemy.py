"""SQLAlchemy 2 support for the ``*_tx`` pushes: run on the psycopg connection under a
SQLAlchemy ``Connection`` or ``Session`` (or their async forms), in its open transaction."""

from __future__ import annotations

from typing import Any


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
