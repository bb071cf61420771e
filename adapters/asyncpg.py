"""asyncpg adapter: an async executor over an asyncpg pool, and ``push_*_tx`` in an asyncpg
connection's open transaction.

pgqueue's statements use named parameters (``%(name)s``); asyncpg wants ``$n``. Each statement
is converted once, by name, so a name used twice is one parameter and the order of first use
decides the numbers (no positional reordering can slip in).

Values are the ones psycopg gets. JSON documents are text cast to ``jsonb``, which asyncpg
takes as is. The hot path's lists (ids, claim tokens, and the outcomes a result write applies)
travel as array literals (``{1,2,3}``, texts quoted: ``{"a","b",NULL}``): psycopg sends them
untyped and the cast (``::bigint[]``, ``::uuid[]``, ``::text[]``, ``::float8[]``, ``::int[]``)
types the parameter itself, parsed once per statement (a cast from ``text`` would be re-parsed
for every row a filter checks). asyncpg wants lists for array parameters, so the literals of
those casts are split here.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import lru_cache
from typing import Any, TypeVar

import asyncpg

from pgqueue.errors import DatabaseUnavailable, NotInTransaction, PgQueueError, schema_error
from pgqueue.store.executor import Operation, Row, Statement, drive_async
from pgqueue.store.unavailable import describe, has_unread_input, is_unavailable, lost_connection

from .host import async_driver_connection, describe_target

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_ARRAY_CAST = re.compile(r"%\((\w+)\)s::(bigint|uuid|text|float8|int)\[\]")
# An element of a quoted array literal (text_array): NULL or "…" with backslash escapes.
_QUOTED_ELEMENT = re.compile(r'NULL|"((?:[^"\\]|\\.)*)"')
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)
_CLOSED = object()
CONNECT_TIMEOUT = 4.0
"""Seconds opening a pool waits for the server before it reports why not."""


def unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    """The error for a pool that could not connect, with the server's reason on one line."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return DatabaseUnavailable(
        f"cannot connect to PostgreSQL ({describe_target(dsn)}): {reason}; check the DSN "
        "and that the server is running"
    )


def _split_literal(value: Any, element: str) -> Any:
    """An array literal (as pgqueue builds them: ``int_array``, ``bare_array``,
    ``float_array``, ``text_array``) to the list asyncpg wants."""
    if not isinstance(value, str):
        return value
    items = value[1:-1]
    if not items:
        return []
    if '"' in items:
        return [
            None if m.group(1) is None else _ESCAPED.sub(r"\1", m.group(1))
            for m in _QUOTED_ELEMENT.finditer(items)
        ]
    parts = items.split(",")
    if element in ("bigint", "int"):
        return [int(p) for p in parts]
    if element == "float8":
        return [float(p) for p in parts]
    return [None if p == "NULL" else p for p in parts]


@lru_cache(maxsize=256)
def array_params(sql: str) -> dict[str, str]:
    """Parameters cast to ``bigint[]`` or ``uuid[]``: name → element type."""
    return {m.group(1): m.group(2) for m in _ARRAY_CAST.finditer(sql)}


@lru_cache(maxsize=256)
def convert(sql: str) -> tuple[str, tuple[str, ...]]:
    """``%(name)s`` placeholders to ``$n``; returns the SQL and the names in ``$n`` order."""
    if "%%" in sql:
        raise ValueError("literal % is not supported in pgqueue statements")
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names[name] = len(names) + 1
        return f"${names[name]}"

    return _PLACEHOLDER.sub(number, sql), tuple(names)


def fetcher(conn: Any) -> Any:
    async def fetch(statement: Statement) -> list[Row]:
        sql, names = convert(statement.sql)
        params = statement.params
        arrays = array_params(statement.sql)
        values = [
            _split_literal(params[name], arrays[name]) if name in arrays else params[name]
            for name in names
        ]
        try:
            return list(await conn.fetch(sql, *values))
        except asyncpg.PostgresError as exc:
            translated = schema_error(exc)
            if translated is None:
                raise
            raise translated from exc

    return fetch


def is_asyncpg_connection(tx: Any) -> bool:
    return isinstance(tx, (asyncpg.Connection, asyncpg.pool.PoolConnectionProxy))


async def run_in_asyncpg(tx: Any, op: Operation[T]) -> T:
    """Run ``op`` in the caller's open transaction on an asyncpg connection (or a SQLAlchemy
    ``AsyncConnection`` / ``AsyncSession`` on the asyncpg driver)."""
    conn = await async_driver_connection(tx)
    if not is_asyncpg_connection(conn):
        raise TypeError(f"expected an asyncpg connection, got {type(conn).__name__}")
    if not conn.is_in_transaction() and type(tx).__module__.startswith("sqlalchemy"):
        from sqlalchemy import text

        # SQLAlchemy's asyncpg dialect opens the driver's transaction at its first statement.
        await tx.execute(text("SELECT 1"))
    if not conn.is_in_transaction():
        raise NotInTransaction(
            "push_*_tx needs a connection inside a transaction, and this asyncpg connection "
            "is in none: the push would commit on its own, apart from your writes. Nothing was "
            "written; push inside `async with conn.transaction():`"
        )
    return await drive_async(op, fetcher(conn))


def set_keepalives(conn: Any) -> None:
    """TCP keepalives on a LISTEN connection (asyncpg has no option for them), so a dead peer
    is noticed in about 20 s even when the listener has nothing to send."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 3), ("TCP_KEEPCNT", 3)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def alive(conn: Any) -> bool:
    """Whether a connection from the pool is usable: open, and with nothing unread while idle
    (the server's farewell after a restart or ``pg_terminate_backend``, which the event loop
    may not have read yet). Checked with one ``poll``, before anything is sent on it."""
    if conn.is_closed():
        return False
    if conn.is_in_transaction():
        return True
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is None or not has_unread_input(sock.fileno())


class AsyncpgExecutor:
    """Async executor over an asyncpg ``Pool`` (made from a DSN, or yours)."""

    def __init__(
        self, target: str | asyncpg.Pool, *, max_size: int = 8, listen_dsn: str | None = None
    ) -> None:
        # The LISTEN connection's own DSN: straight to PostgreSQL when ``target`` goes through
        # PgBouncer in transaction pooling mode (where LISTEN does not work).
        self.listen_dsn = listen_dsn
        if isinstance(target, asyncpg.Pool):
            self.pool: asyncpg.Pool | None = target
            self._owned = False
            self._dsn: str | None = None
        else:
            self.pool = None
            self._owned = True
            self._dsn = target
        self._max_size = max_size
        self._open_lock = asyncio.Lock()

    async def open(self) -> None:
        async with self._open_lock:
            if self.pool is None:
                assert self._dsn is not None
                try:
                    self.pool = await asyncpg.create_pool(
                        self._dsn, min_size=1, max_size=self._max_size, timeout=CONNECT_TIMEOUT
                    )
                except (
                    OSError,
                    TimeoutError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                ) as exc:
                    raise unavailable(self._dsn, exc) from exc

    async def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            await self.open()
        assert self.pool is not None
        return self.pool

    async def run(self, op: Operation[T]) -> T:
        pool = await self._pool()
        conn = await self._acquire(pool)
        try:
            if op.transactional:
                async with conn.transaction():
                    return await drive_async(op, fetcher(conn))
            return await drive_async(op, fetcher(conn))
        except Exception as exc:
            if isinstance(exc, PgQueueError) or not is_unavailable(exc):
                raise
            raise lost_connection(exc) from exc
        finally:
            await pool.release(conn)

    async def _acquire(self, pool: asyncpg.Pool) -> Any:
        """A connection from the pool that is :func:`alive`; dead ones are terminated and
        handed back (the pool reconnects them)."""
        try:
            for _ in range(self._max_size):
                conn = await pool.acquire()
                if alive(conn):
                    return conn
                conn.terminate()
                await pool.release(conn)
            return await pool.acquire()
        except Exception as exc:
            if isinstance(exc, PgQueueError) or not is_unavailable(exc):
                raise
            if self._dsn is None:
                raise DatabaseUnavailable(
                    f"cannot get a connection from the asyncpg pool: {describe(exc)}"
                ) from exc
            raise unavailable(self._dsn, exc) from exc

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        pool = await self._pool()
        # From a DSN: a connection of its own. With your pool: one of its connections, held
        # for as long as the listener runs.
        own_dsn = self.listen_dsn or self._dsn
        conn: Any = await asyncpg.connect(own_dsn) if own_dsn else await pool.acquire()
        if own_dsn:
            set_keepalives(conn)
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            inbox.put_nowait(payload)

        def on_close(_conn: Any) -> None:
            inbox.put_nowait(_CLOSED)

        conn.add_termination_listener(on_close)
        try:
            await conn.add_listener(channel, on_notify)

            async def payloads() -> AsyncIterator[str]:
                while True:
                    item = await inbox.get()
                    if item is _CLOSED:
                        raise ConnectionError("the LISTEN connection was closed")
                    yield item

            yield payloads()
        finally:
            conn.remove_termination_listener(on_close)
            if own_dsn:
                try:
                    await conn.close(timeout=2)
                except Exception:  # noqa: BLE001 - a silent socket: just drop it
                    conn.terminate()
            else:
                # On a broken connection this fails; the pool replaces the connection anyway.
                with suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await conn.remove_listener(channel, on_notify)
                await pool.release(conn)

    async def close(self) -> None:
        if self._owned and self.pool is not None:
            await self.pool.close()
            self.pool = None
