"""psycopg 3 adapter: connections and pools, blocking and async."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NoReturn, TypeVar

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from pgqueue.errors import DatabaseUnavailable, NotInTransaction, PgQueueError, schema_error
from pgqueue.store.executor import Operation, Row, Statement, drive_async, drive_sync
from pgqueue.store.unavailable import has_unread_input, is_unavailable, lost_connection

from .host import describe_target, driver_connection

T = TypeVar("T")


def _has_rows(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    # Cheaper than ``cursor.description``, which builds column objects on every call.
    result = cursor.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


def _rows(cursor: psycopg.Cursor[Any]) -> list[Row]:
    return cursor.fetchall() if _has_rows(cursor) else []


async def _arows(cursor: psycopg.AsyncCursor[Any]) -> list[Row]:
    return await cursor.fetchall() if _has_rows(cursor) else []


def _raise_schema_error(exc: psycopg.errors.ProgrammingError) -> NoReturn:
    """Raise pgqueue's error for a missing or outdated schema, or ``exc`` itself."""
    translated = schema_error(exc)
    if translated is None:
        raise exc
    raise translated from exc


CONNECT_TIMEOUT_SECONDS = 4
"""How long opening a queue waits for the server to answer before it reports why not."""


def sync_fetcher(conn: psycopg.Connection[Any]) -> Any:
    def fetch(statement: Statement) -> list[Row]:
        try:
            return _rows(conn.execute(statement.sql, statement.params))
        except psycopg.errors.ProgrammingError as exc:
            _raise_schema_error(exc)

    return fetch


def async_fetcher(conn: psycopg.AsyncConnection[Any]) -> Any:
    async def fetch(statement: Statement) -> list[Row]:
        try:
            return await _arows(await conn.execute(statement.sql, statement.params))
        except psycopg.errors.ProgrammingError as exc:
            _raise_schema_error(exc)

    return fetch


# The sticky connection's statements run on one cursor kept with it: ``conn.execute`` makes a
# cursor and its adaptation context for every statement, about a tenth of a single push's CPU
# time in the client. The cursor holds on to the last result until the next statement.


def sync_cursor_fetcher(cursor: psycopg.Cursor[Any]) -> Any:
    def fetch(statement: Statement) -> list[Row]:
        try:
            cursor.execute(statement.sql, statement.params)
        except psycopg.errors.ProgrammingError as exc:
            _raise_schema_error(exc)
        return _rows(cursor)

    return fetch


def async_cursor_fetcher(cursor: psycopg.AsyncCursor[Any]) -> Any:
    async def fetch(statement: Statement) -> list[Row]:
        try:
            await cursor.execute(statement.sql, statement.params)
        except psycopg.errors.ProgrammingError as exc:
            _raise_schema_error(exc)
        return await _arows(cursor)

    return fetch


def unavailable(conninfo: str, exc: BaseException) -> DatabaseUnavailable:
    """The error for a connection that failed, with the server's reason on one line."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return DatabaseUnavailable(
        f"cannot connect to PostgreSQL ({describe_target(conninfo)}): {reason}; check the DSN "
        "(PGQUEUE_DSN, or the queue's first argument) and that the server is running"
    )


def probe(conninfo: str) -> None:
    """Connect once, briefly: a wrong DSN fails here, with the server's reason, instead of
    leaving a pool retrying in the background until its timeout."""
    try:
        psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT_SECONDS).close()
    except (psycopg.Error, OSError) as exc:
        raise unavailable(conninfo, exc) from exc


async def probe_async(conninfo: str) -> None:
    """:func:`probe`, awaitable."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            conninfo, connect_timeout=CONNECT_TIMEOUT_SECONDS
        )
        await conn.close()
    except (psycopg.Error, OSError) as exc:
        raise unavailable(conninfo, exc) from exc


def require_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Refuse an autocommit connection outside a transaction: the push would commit on its
    own, apart from the caller's writes."""
    if conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        raise NotInTransaction(
            "push_*_tx needs a connection inside a transaction, and this psycopg connection is "
            "in autocommit mode outside one: the push would commit on its own, apart from your "
            "writes. Nothing was written; push inside `with conn.transaction():` or use a "
            "connection with autocommit=False"
        )


def alive(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether a connection from the pool is usable: open, and with nothing unread while idle.

    A server that restarted, or ``pg_terminate_backend``, closes the pool's idle connections;
    psycopg notices only when a statement is sent. Checked here instead (one ``poll``, no round
    trip), the dead connection is replaced before anything was sent on it.
    """
    if conn.closed or conn.broken:
        return False
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        return True
    return not has_unread_input(conn.pgconn.socket)


def translate(exc: Exception) -> Exception:
    """pgqueue's error for a driver error that means the connection was lost; ``exc`` itself
    for any other error."""
    if isinstance(exc, PgQueueError) or not is_unavailable(exc):
        return exc
    return lost_connection(exc)


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
        self._sticky_fetch: Any = None  # a fetcher on a cursor of the sticky connection
        self._sticky_lock = threading.Lock()

    @property
    def conninfo(self) -> str:
        return str(self.pool.conninfo)

    def _ensure_open(self) -> None:
        with self._open_lock:
            if not self._opened and self._owned:
                probe(self.conninfo)
                self.pool.open(wait=True)
            self._opened = True

    def run(self, op: Operation[T]) -> T:
        try:
            return self._run(op)
        except PoolTimeout as exc:
            probe(self.conninfo)  # raises with the server's reason when it is unreachable
            raise DatabaseUnavailable(
                f"no connection from the pool within {self.pool.timeout:g}s: {exc}"
            ) from exc
        except Exception as exc:
            translated = translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    def _getconn(self) -> psycopg.Connection[Any]:
        """A connection from the pool that is :func:`alive`; dead ones are closed and handed
        back (the pool replaces them)."""
        for _ in range(self.pool.max_size):
            conn = self.pool.getconn()
            if alive(conn):
                return conn
            conn.close()
            self.pool.putconn(conn)
        return self.pool.getconn()  # every pooled one was dead: this one is new

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        conn = self._getconn()
        try:
            with conn:  # commits or rolls back a transaction left open; the pool keeps it
                yield conn
        finally:
            self.pool.putconn(conn)

    def _run(self, op: Operation[T]) -> T:
        if not self._opened:
            self._ensure_open()
        if not op.transactional and self._sticky_lock.acquire(blocking=False):
            try:
                conn = self._sticky
                if conn is None or not alive(conn):
                    if conn is not None:
                        conn.close()  # so the pool discards it
                    self._release_sticky()
                    conn = self._sticky = self._getconn()
                    self._sticky_fetch = sync_cursor_fetcher(conn.cursor())
                if conn.autocommit:
                    try:
                        return drive_sync(op, self._sticky_fetch)
                    except (psycopg.OperationalError, psycopg.InterfaceError):
                        self._release_sticky()
                        raise
            finally:
                self._sticky_lock.release()
        with self._connection() as conn:
            if op.transactional or not conn.autocommit:
                with conn.transaction():
                    return drive_sync(op, sync_fetcher(conn))
            return drive_sync(op, sync_fetcher(conn))

    def _release_sticky(self) -> None:
        conn, self._sticky = self._sticky, None
        self._sticky_fetch = None
        if conn is not None:
            self.pool.putconn(conn)  # the pool replaces it if it is broken

    def close(self) -> None:
        with self._sticky_lock:
            self._release_sticky()
        if self._owned and self._opened:
            self.pool.close()
        self._opened = False


def run_in_psycopg(tx: Any, op: Operation[T]) -> T:
    """Run ``op`` in the caller's open transaction: a psycopg ``Connection`` or cursor, or a
    SQLAlchemy ``Connection`` or ``Session`` using psycopg."""
    conn = driver_connection(tx)
    conn = getattr(conn, "connection", conn) if isinstance(conn, psycopg.Cursor) else conn
    if not isinstance(conn, psycopg.Connection):
        raise TypeError(
            f"push_*_tx needs a psycopg Connection or cursor, or a SQLAlchemy Connection or "
            f"Session on the psycopg driver; got {type(tx).__name__}"
        )
    require_transaction(conn)
    return drive_sync(op, sync_fetcher(conn))


async def run_in_psycopg_async(tx: Any, conn: Any, op: Operation[T]) -> T:
    """Run ``op`` in the caller's open transaction on ``conn``, the psycopg connection (or
    cursor) that ``tx`` is or wraps (:func:`pgqueue.adapters.transactions.run_in_async`
    unwraps it)."""
    conn = getattr(conn, "connection", conn) if isinstance(conn, psycopg.AsyncCursor) else conn
    if not isinstance(conn, psycopg.AsyncConnection):
        raise TypeError(
            f"push_*_tx needs a psycopg AsyncConnection or cursor, an asyncpg connection, or a "
            f"SQLAlchemy AsyncConnection or AsyncSession on either driver; got {type(tx).__name__}"
        )
    require_transaction(conn)
    return await drive_async(op, async_fetcher(conn))


LISTEN_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
}
"""TCP keepalives of the LISTEN connection (a dead peer is noticed in about 20 s even when the
listener has nothing to send); options given in the DSN win."""


def keepalive_options(conninfo: str) -> dict[str, Any]:
    given = conninfo_to_dict(conninfo)
    return {name: value for name, value in LISTEN_KEEPALIVES.items() if name not in given}


class AsyncPsycopgExecutor:
    """Async executor over a psycopg ``AsyncConnectionPool`` (made from a DSN, or yours)."""

    def __init__(
        self,
        target: str | AsyncConnectionPool,
        *,
        max_size: int = 8,
        listen_dsn: str | None = None,
    ) -> None:
        # The LISTEN connection's own DSN: straight to PostgreSQL when ``target`` goes through
        # PgBouncer in transaction pooling mode (where LISTEN does not work).
        self.listen_dsn = listen_dsn
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
        self._sticky_fetch: Any = None  # a fetcher on a cursor of the sticky connection
        self._sticky_lock = asyncio.Lock()

    async def open(self) -> None:
        if not self._opened and (self._owned or self.pool.closed):
            # Your pool, made with open=False and not opened yet: opened (and closed) here.
            self._owned = True
            await probe_async(self.conninfo)
            # No wait=True: a wait that times out closes the pool for good, and concurrent
            # waits trip an assertion; the probe above already failed fast with the reason.
            await self.pool.open()
        self._opened = True

    async def run(self, op: Operation[T]) -> T:
        try:
            return await self._run(op)
        except PoolTimeout as exc:
            await probe_async(self.conninfo)
            raise DatabaseUnavailable(
                f"no connection from the pool within {self.pool.timeout:g}s: {exc}"
            ) from exc
        except Exception as exc:
            translated = translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    async def _getconn(self) -> psycopg.AsyncConnection[Any]:
        """See :meth:`PsycopgExecutor._getconn`."""
        for _ in range(self.pool.max_size):
            conn = await self.pool.getconn()
            if alive(conn):
                return conn
            await conn.close()
            await self.pool.putconn(conn)
        return await self.pool.getconn()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        conn = await self._getconn()
        try:
            async with conn:
                yield conn
        finally:
            await self.pool.putconn(conn)

    async def _run(self, op: Operation[T]) -> T:
        if not self._opened:
            await self.open()
        if not op.transactional and not self._sticky_lock.locked():
            async with self._sticky_lock:
                conn = self._sticky
                if conn is None or not alive(conn):
                    if conn is not None:
                        await conn.close()  # so the pool discards it
                    await self._release_sticky()
                    conn = self._sticky = await self._getconn()
                    self._sticky_fetch = async_cursor_fetcher(conn.cursor())
                if conn.autocommit:
                    try:
                        return await drive_async(op, self._sticky_fetch)
                    except (psycopg.OperationalError, psycopg.InterfaceError):
                        await self._release_sticky()
                        raise
        async with self._connection() as conn:
            if op.transactional or not conn.autocommit:
                async with conn.transaction():
                    return await drive_async(op, async_fetcher(conn))
            return await drive_async(op, async_fetcher(conn))

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        conninfo = self.listen_dsn or self.conninfo
        conn = await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, **keepalive_options(conninfo)
        )
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
        self._sticky_fetch = None
        if conn is not None:
            await self.pool.putconn(conn)  # the pool replaces it if it is broken

    async def close(self) -> None:
        async with self._sticky_lock:
            await self._release_sticky()
        if self._owned and self._opened:
            await self.pool.close()
        self._opened = False
