"""The one classifier of "the database is unavailable": which SQLSTATEs and driver errors it
takes, and that it imports no driver."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import psycopg
import psycopg.errors
import psycopg_pool
import pytest
import sqlalchemy.exc

from pgqueue.adapters.shard_routing import Routing, ShardUnavailable
from pgqueue.errors import DatabaseUnavailable
from pgqueue.store.unavailable import is_unavailable, unavailable_sqlstate

EXPECTED_UNAVAILABLE = {
    # class 08, connection exception
    "08000",
    "08001",
    "08003",
    "08004",
    "08006",
    "08007",
    "08P01",
    # class 57, operator intervention: the server ends or refuses the session
    "57P01",
    "57P02",
    "57P03",
    "57P05",
    # class 53: no connection slot left
    "53300",
}


def test_the_sqlstates_classified_as_unavailable_are_exactly_these() -> None:
    known = psycopg.errors._sqlcodes  # every SQLSTATE psycopg knows (PostgreSQL's list)
    assert {code for code in known if unavailable_sqlstate(code)} == EXPECTED_UNAVAILABLE


@pytest.mark.parametrize("code", sorted(EXPECTED_UNAVAILABLE))
def test_each_drivers_error_for_those_sqlstates_is_unavailable(code: str) -> None:
    psycopg_error = psycopg.errors.lookup(code)
    assert is_unavailable(psycopg_error(f"server says {code}"))
    asyncpg_error = asyncpg.exceptions.PostgresError.get_message_class_for_sqlstate(code)
    assert asyncpg_error is not None and asyncpg_error.sqlstate == code
    assert is_unavailable(asyncpg_error(f"server says {code}"))


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.errors.DiskFull("no space left"),
        psycopg.errors.UniqueViolation("duplicate key"),
        psycopg.errors.DatabaseDropped("database dropped"),
        asyncpg.exceptions.QueryCanceledError("canceling statement"),
        asyncpg.exceptions.ClientConfigurationError("bad sslmode"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        ValueError("a bug"),
        KeyError("a bug"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_statement_errors_and_bugs_are_not_unavailable(error: BaseException) -> None:
    assert not is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.InterfaceError("the connection is closed"),
        psycopg_pool.PoolTimeout("couldn't get a connection after 30.00 sec"),
        psycopg_pool.PoolClosed("the pool is closed"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.InterfaceError("connection is closed"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        DatabaseUnavailable("down"),
        sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.errors.AdminShutdown("bye")),
    ],
    ids=lambda error: type(error).__name__,
)
def test_connection_errors_are_unavailable(error: BaseException) -> None:
    assert is_unavailable(error)


def test_a_shard_sees_a_subclass_of_a_connection_error_as_down() -> None:
    """``AdminShutdown`` (57P01) subclasses ``OperationalError``; matching class names missed
    it, so a push to a stopped shard raised the driver's error."""
    routing = Routing(2, None, retry_after=1.0)
    cause = psycopg.errors.AdminShutdown("terminating connection due to administrator command")
    raised = routing.failed(1, cause)
    assert isinstance(raised, ShardUnavailable) and isinstance(raised, DatabaseUnavailable)
    assert raised.shard == 1


def test_the_classifier_imports_no_driver() -> None:
    code = (
        "import sys, pgqueue.store.unavailable as u; "
        "assert not u.is_unavailable(ValueError()); "
        "bad = {'psycopg', 'psycopg_pool', 'asyncpg', 'sqlalchemy'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
