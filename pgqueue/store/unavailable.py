"""Whether an error means "the database is unavailable", for every driver, in one place.

Adapters, the sharded queue and the HTTP service all ask :func:`is_unavailable`. It decides by
SQLSTATE (both psycopg and asyncpg errors carry ``sqlstate``) and by ``isinstance`` against the
drivers' connection errors. No driver is imported here: a driver's classes are looked at only
when the driver is already imported (it must be, for its error to exist), so the core stays
driver-free.
"""

from __future__ import annotations

import select
import sys

from pgqueue.errors import DatabaseUnavailable

UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08"})
"""SQLSTATE classes that mean the connection failed: class 08, connection exception."""

UNAVAILABLE_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: the server is shutting down or the backend was terminated
        "57P02",  # crash_shutdown: another backend crashed, the server resets
        "57P03",  # cannot_connect_now: the server is starting up or shutting down
        "57P05",  # idle_session_timeout: the server closed an idle connection
        "53300",  # too_many_connections: no connection slot left, for now
    }
)
"""Single SQLSTATEs outside those classes that mean the server cannot serve this connection."""


def unavailable_sqlstate(sqlstate: str | None) -> bool:
    """Whether ``sqlstate`` (five characters, or ``None``) says the database is unavailable."""
    if not isinstance(sqlstate, str) or len(sqlstate) != 5:
        return False
    return sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in UNAVAILABLE_SQLSTATES


def _psycopg_unavailable(exc: BaseException) -> bool:
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        if isinstance(exc, psycopg.InterfaceError):
            return True  # "the connection is closed", "the connection is lost"
        # An OperationalError without a SQLSTATE comes from the client side of a connection
        # ("connection failed", "server closed the connection unexpectedly", "consuming input
        # failed"). With a SQLSTATE the server said why, and the SQLSTATE decides: a statement
        # timeout (57014), a deadlock (40P01) or a full disk (53100) is no outage.
        if isinstance(exc, psycopg.OperationalError) and getattr(exc, "sqlstate", None) is None:
            return True
    pool = sys.modules.get("psycopg_pool")
    return pool is not None and isinstance(
        exc, (pool.PoolTimeout, pool.PoolClosed, pool.TooManyRequests)
    )


def _asyncpg_unavailable(exc: BaseException) -> bool:
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is None:
        return False
    errors = asyncpg.exceptions
    if isinstance(exc, errors.PostgresConnectionError):
        return True
    # "connection is closed", "the connection was closed in the middle of operation"; not a
    # bad DSN option or a feature the server lacks.
    return isinstance(exc, errors.InterfaceError) and not isinstance(
        exc,
        (
            errors.ClientConfigurationError,
            errors.UnsupportedClientFeatureError,
            errors.UnsupportedServerFeatureError,
        ),
    )


def _sqlalchemy_cause(exc: BaseException) -> BaseException | None:
    """The driver error a SQLAlchemy ``DBAPIError`` wraps, when SQLAlchemy is in use."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is None or not isinstance(exc, sqlalchemy_exc.DBAPIError):
        return None
    orig: BaseException | None = exc.orig
    return orig


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached or dropped the connection (an
    outage, worth a retry later), rather than an error of the statement or a bug.

    True for ``OSError`` (so for :class:`~pgqueue.errors.DatabaseUnavailable`) and
    ``TimeoutError``, for a SQLSTATE of class 08 or in :data:`UNAVAILABLE_SQLSTATES`, for
    psycopg's ``InterfaceError`` and client-side ``OperationalError``, psycopg_pool's
    ``PoolTimeout``/``PoolClosed``/``TooManyRequests``, asyncpg's ``PostgresConnectionError``
    and connection ``InterfaceError``; a SQLAlchemy ``DBAPIError`` is judged by the driver
    error it wraps.
    """
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    wrapped = _sqlalchemy_cause(exc)
    if wrapped is not None:
        return is_unavailable(wrapped)
    if unavailable_sqlstate(getattr(exc, "sqlstate", None)):
        return True
    return _psycopg_unavailable(exc) or _asyncpg_unavailable(exc)


def has_unread_input(fileno: int) -> bool:
    """Whether the socket ``fileno`` of an idle connection has something to read, without
    reading it or waiting.

    An idle connection receives nothing unasked (pgqueue's pooled connections do not LISTEN),
    so input there is the server's farewell: the termination message (57P01 on a restart or
    ``pg_terminate_backend``) or the end of the stream. Such a connection is dead before a
    statement is sent on it, so it is replaced and nothing is lost or sent twice.
    """
    if fileno < 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fileno, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fileno], [], [], 0)
    return bool(readable)


def describe(exc: BaseException) -> str:
    """The error's class and message on one line."""
    reason = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__


def lost_connection(exc: BaseException) -> DatabaseUnavailable:
    """The :class:`~pgqueue.errors.DatabaseUnavailable` for a statement whose connection was
    lost after it was sent: it may or may not have been applied."""
    return DatabaseUnavailable(
        "lost the connection to PostgreSQL while running a statement, which may or may not "
        "have been applied (a push with an external_key can be repeated exactly; see "
        f"'Lost connections' in the guarantees): {describe(exc)}"
    )


__all__ = [
    "UNAVAILABLE_SQLSTATES",
    "UNAVAILABLE_SQLSTATE_CLASSES",
    "describe",
    "has_unread_input",
    "is_unavailable",
    "lost_connection",
    "unavailable_sqlstate",
]
