"""Exceptions raised by pgqueue; every input error is a ``ValueError`` subclass.

Each message names the cause and what to do about it. The "Errors and troubleshooting" page of
the documentation lists them all.
"""

from __future__ import annotations

import re
from datetime import timedelta

from pgqueue.bounds import MAX_SECONDS

DISTRIBUTION = "pgqueue-tasks"
"""The name pgqueue is installed under (``pip install pgqueue-tasks``); it imports as pgqueue."""


class PgQueueError(Exception):
    """Base class of every error pgqueue raises on purpose."""


class InvalidTask(PgQueueError, ValueError):
    """A task (kind, payload, key or delay) was rejected before any SQL ran; nothing was written."""


class InvalidOptions(PgQueueError, ValueError):
    """Kind or loop options, a handler or a hook are unusable (raised at registration)."""


class UnknownKind(InvalidTask, KeyError):
    """The kind is neither registered nor declared on this queue; nothing was written."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown kind"


class CapacityExceeded(PgQueueError):
    """A push would take a kind over its ``max_pending`` cap; nothing was inserted."""

    def __init__(self, kind: str, max_pending: int, pending: int, requested: int) -> None:
        super().__init__(
            f"kind {kind!r} holds {pending} pending task(s); {requested} more would exceed "
            f"max_pending={max_pending}"
        )
        self.kind = kind
        self.max_pending = max_pending
        self.pending = pending
        self.requested = requested


class QueueClosed(PgQueueError, RuntimeError):
    """The queue was closed; it accepts no more calls."""


class NotInTransaction(PgQueueError, TypeError):
    """A ``push_*_tx`` call got a connection that is not inside a transaction (for instance a
    psycopg connection in autocommit mode); nothing was written."""


class MissingExtra(PgQueueError, ImportError):
    """A feature needs an optional dependency that is not installed; the message names the
    extra to install (``pip install "pgqueue-tasks[migrations]"`` and the like)."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the {extra!r} extra, which is not installed: "
            f'pip install "{DISTRIBUTION}[{extra}]"'
        )
        self.extra = extra


class DatabaseUnavailable(PgQueueError, ConnectionError):
    """The database refused or did not answer a connection, or lost it after a statement was
    sent (which may or may not have been applied); the message carries the server's reason
    (wrong DSN, unknown database, bad password, server down) and ``__cause__`` the driver's
    error."""


class SchemaNotMigrated(PgQueueError, RuntimeError):
    """pgqueue's tables are missing, or older than this version of pgqueue needs, in the schema
    the queue uses: run ``pgqueue migrate`` (with the same ``--schema``)."""

    def __init__(self, schema: str, detail: str) -> None:
        super().__init__(
            f"{detail}: pgqueue's tables in schema {schema!r} are missing or out of date; run "
            f"`pgqueue migrate --schema {schema}` (with PGQUEUE_DSN set, or --dsn)"
        )
        self.schema = schema


class MustCancelTask(Exception):
    """Raised by a handler or hook: end the task as ``cancelled``, with no further attempts."""


class Snooze(Exception):
    """Raised by a handler: put the task back to waiting for ``seconds`` without consuming an
    attempt (``Snooze(30)``, or a ``timedelta``). Each snooze is counted on the task's row; past
    the kind's ``max_snoozes`` a snooze is a failure like an exception.

    ``seconds`` must be from 0 to ten years: ``Snooze(-1)`` raises :class:`InvalidTask`.
    """

    def __init__(self, seconds: float | timedelta) -> None:
        value = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not 0 <= value <= MAX_SECONDS  # also false for NaN
        ):
            raise InvalidTask(
                f"Snooze needs a delay from 0 to {MAX_SECONDS:.0f} seconds (10 years), "
                f"got {seconds!r}"
            )
        super().__init__(f"snoozed for {float(value):g}s")
        self.seconds = float(value)


class SnoozeLimit(PgQueueError):
    """A handler snoozed a task more than its kind's ``max_snoozes``: that snooze is recorded
    as a failure with this error."""


class AttemptTimeout(PgQueueError, TimeoutError):
    """The attempt ran past its deadline (recorded in the task's error ring)."""


class UnknownTask(InvalidTask, LookupError):
    """No task has this id (it never existed, or retention deleted it)."""


class WaitTimeout(PgQueueError, TimeoutError):
    """``queue.wait`` gave up: the task did not end within the timeout."""


class InvalidResult(PgQueueError, ValueError):
    """A handler returned a value that cannot be stored as the task's result (not JSON, or over
    ``KindOptions.max_result_bytes``): the attempt fails with this error."""


# SQLSTATEs of a statement that names a missing relation, type or schema of pgqueue's.
_MISSING_OBJECT_STATES = {"42P01", "42704", "3F000"}
_QUALIFIED_NAME = re.compile(r'"([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)"')
_SCHEMA_NAME = re.compile(r'schema "([a-z_][a-z0-9_]*)" does not exist')


def schema_error(exc: BaseException) -> SchemaNotMigrated | None:
    """The :class:`SchemaNotMigrated` for a driver error raised by one of pgqueue's statements
    because its tables, enum or schema are missing; ``None`` for any other error.

    Works for every driver: psycopg and asyncpg errors both carry ``sqlstate``.
    """
    if getattr(exc, "sqlstate", None) not in _MISSING_OBJECT_STATES:
        return None
    message = str(exc).splitlines()[0] if str(exc) else ""
    match = _QUALIFIED_NAME.search(message) or _SCHEMA_NAME.search(message)
    if match is None:
        return None
    return SchemaNotMigrated(match.group(1), message)
