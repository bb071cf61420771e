"""Minimal async PostgreSQL access for the harness itself (not for the libraries measured).

The harness only needs to run a few statements: create and drop databases, count unfinished
jobs, prefill tables. It uses psycopg 3 when importable and falls back to asyncpg, so it runs
unchanged in the project venv and in the peers venv.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

try:
    import psycopg
except ImportError:  # pragma: no cover - depends on the venv
    psycopg = None  # type: ignore[assignment]

try:
    import asyncpg
except ImportError:  # pragma: no cover - depends on the venv
    asyncpg = None  # type: ignore[assignment, unused-ignore]


def with_database(dsn: str, dbname: str) -> str:
    """Return `dsn` (a postgresql:// URL) pointing at database `dbname` instead."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"expected a postgresql:// URL, got {dsn!r}")
    return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))


def database_of(dsn: str) -> str:
    """Return the database name of a postgresql:// URL."""
    return urllib.parse.urlsplit(dsn).path.lstrip("/")


def quote_ident(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


class Db:
    """One autocommit connection with `execute` and `scalar`, over psycopg or asyncpg."""

    def __init__(self, conn: Any, flavour: str) -> None:
        self._conn = conn
        self._flavour = flavour

    @classmethod
    async def connect(cls, dsn: str) -> Db:
        if psycopg is not None:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            return cls(conn, "psycopg")
        if asyncpg is not None:
            return cls(await asyncpg.connect(dsn), "asyncpg")
        raise RuntimeError("the benchmark harness needs psycopg (3) or asyncpg installed")

    async def execute(self, sql: str) -> None:
        """Run a statement without parameters (may contain several statements for asyncpg)."""
        if self._flavour == "psycopg":
            await self._conn.execute(sql.encode())  # bytes: no client-side placeholder parsing
        else:
            await self._conn.execute(sql)

    async def scalar(self, sql: str) -> Any:
        """Run a query without parameters and return the first column of the first row."""
        if self._flavour == "psycopg":
            cur = await self._conn.execute(sql.encode())
            row = await cur.fetchone()
            return None if row is None else row[0]
        return await self._conn.fetchval(sql)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a query without parameters and return all rows as tuples."""
        if self._flavour == "psycopg":
            cur = await self._conn.execute(sql.encode())
            return [tuple(r) for r in await cur.fetchall()]
        return [tuple(r) for r in await self._conn.fetch(sql)]

    async def close(self) -> None:
        await self._conn.close()


async def create_database(admin_dsn: str, dbname: str) -> None:
    """Drop `dbname` if it exists (a leftover of an aborted run), then create it empty."""
    db = await Db.connect(admin_dsn)
    try:
        await db.execute(f"DROP DATABASE IF EXISTS {quote_ident(dbname)} WITH (FORCE)")
        await db.execute(f"CREATE DATABASE {quote_ident(dbname)}")
    finally:
        await db.close()


async def drop_database(admin_dsn: str, dbname: str) -> None:
    """Drop `dbname`, disconnecting any session still attached to it."""
    db = await Db.connect(admin_dsn)
    try:
        await db.execute(f"DROP DATABASE IF EXISTS {quote_ident(dbname)} WITH (FORCE)")
    finally:
        await db.close()
