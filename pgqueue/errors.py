"""Exceptions raised by pgqueue; every input error is a ``ValueError`` subclass."""

from __future__ import annotations


class PgQueueError(Exception):
    """Base class of every error pgqueue raises on purpose."""


class InvalidTask(PgQueueError, ValueError):
    """A task (kind, payload, key or delay) was rejected before any SQL ran."""


class InvalidOptions(PgQueueError, ValueError):
    """Kind or loop options are inconsistent (raised at registration)."""


class UnknownKind(InvalidTask, KeyError):
    """The kind is neither registered nor declared on this queue."""

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


class MustCancelTask(Exception):
    """Raised by a handler or hook: end the task as ``cancelled``, with no further attempts."""


class AttemptTimeout(PgQueueError, TimeoutError):
    """The attempt ran past its deadline (recorded in the task's error ring)."""
