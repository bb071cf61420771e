"""What handlers, hooks and stamps receive, and what a failure hook decides."""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pgqueue.bounds import MAX_SECONDS


class Envelope:
    """One attempt of one task: its data, its position among attempts and its deadline.

    ``cancel_requested`` turns true when the task is cancelled while it runs (for instance by
    ``cancel_task_by_key``) or the queue aborts; a long handler should check it and return.
    ``snoozes`` is how many times the task snoozed before this attempt (``raise Snooze``).
    A workflow node's envelope also carries ``workflow_id``, its ``node`` name and what its
    parents left it: ``parents`` (their results by node name), ``parent_statuses`` (how each
    ended) and ``outcome_counts`` (how many ended in each way: a batch callback's summary).
    ``trace_context`` is the OpenTelemetry context the task was pushed in (W3C
    ``traceparent``, then a line break and the ``tracestate`` when there is one), or ``None``.
    """

    __slots__ = (
        "_cancelled",
        "_deadline",
        "_deadline_after",
        "_deadline_base",
        "attempt",
        "attempts_left",
        "external_key",
        "id",
        "kind",
        "max_attempts",
        "messages",
        "monotonic_deadline",
        "node",
        "parent_outcomes",
        "payload",
        "snoozes",
        "trace_context",
        "workflow_id",
    )

    def __init__(
        self,
        *,
        id: int,
        kind: str,
        payload: Any,
        external_key: str | None,
        attempt: int,
        attempts_left: int,
        max_attempts: int,
        deadline: datetime,
        monotonic_deadline: float,
        messages: list[str],
        snoozes: int = 0,
        trace_context: str | None = None,
    ) -> None:
        self.id = id
        self.kind = kind
        self.payload = payload
        self.external_key = external_key
        self.attempt = attempt
        self.attempts_left = attempts_left
        self.max_attempts = max_attempts
        self._deadline: datetime | None = deadline
        self._deadline_base = deadline
        self._deadline_after = 0.0
        self.monotonic_deadline = monotonic_deadline
        self.messages = messages
        self.snoozes = snoozes
        self.trace_context = trace_context
        self._cancelled = False
        self.workflow_id: str | None = None
        self.node: str | None = None
        # {parent node: {"id", "status", "result"}}, as the settling statement wrote it.
        self.parent_outcomes: dict[str, dict[str, Any]] = {}

    @classmethod
    def claimed(
        cls,
        id: int,
        kind: str,
        payload: Any,
        external_key: str | None,
        attempt: int,
        attempts_left: int,
        max_attempts: int,
        claimed_at: datetime,
        seconds_left: float,
        monotonic_deadline: float,
        messages: list[str],
        snoozes: int = 0,
        workflow: list[Any] | None = None,
        trace_context: str | None = None,
    ) -> Envelope:
        """The envelope of a task the runtime just started: its wall-clock deadline is
        ``claimed_at`` plus ``seconds_left``, worked out only if a handler reads it. (Built
        slot by slot, not through ``__init__``'s keywords: this runs once per attempt.)"""
        self = cls.__new__(cls)
        self.id = id
        self.kind = kind
        self.payload = payload
        self.external_key = external_key
        self.attempt = attempt
        self.attempts_left = attempts_left
        self.max_attempts = max_attempts
        self._deadline = None
        self._deadline_base = claimed_at
        self._deadline_after = seconds_left
        self.monotonic_deadline = monotonic_deadline
        self.messages = messages
        self.snoozes = snoozes
        self.trace_context = trace_context
        self._cancelled = False
        if workflow is None:
            self.workflow_id = None
            self.node = None
            self.parent_outcomes = {}
        else:
            self.workflow_id, self.node, outcomes = workflow
            self.parent_outcomes = outcomes or {}
        return self

    @property
    def parents(self) -> dict[str, Any]:
        """The parents' results by node name (``None`` for a parent that did not succeed or
        returned nothing); empty for a task outside a workflow or a node without parents."""
        return {name: o.get("result") for name, o in self.parent_outcomes.items()}

    @property
    def parent_statuses(self) -> dict[str, str]:
        """How each parent ended, by node name: ``succeeded``, ``cancelled`` or
        ``no_attempts_left``."""
        return {name: str(o.get("status")) for name, o in self.parent_outcomes.items()}

    @property
    def outcome_counts(self) -> dict[str, int]:
        """How many parents ended in each way (``succeeded``, ``cancelled``,
        ``no_attempts_left``; every key present): what a batch callback reports."""
        counts = {"succeeded": 0, "cancelled": 0, "no_attempts_left": 0}
        for o in self.parent_outcomes.values():
            status = str(o.get("status"))
            counts[status] = counts.get(status, 0) + 1
        return counts

    @property
    def deadline(self) -> datetime:
        """When the attempt times out, on the database server's clock."""
        deadline = self._deadline
        if deadline is None:
            deadline = self._deadline = self._deadline_base + timedelta(
                seconds=self._deadline_after
            )
        return deadline

    @property
    def previous_errors(self) -> list[str]:
        """Error messages of earlier attempts (the newest last)."""
        return self.messages

    @property
    def is_last_attempt(self) -> bool:
        """True on the last attempt: a failure now ends the task ``no_attempts_left``."""
        return self.attempts_left == 0

    @property
    def cancel_requested(self) -> bool:
        """True once the task was cancelled (``cancel_task_by_key``) or the attempt timed out;
        a long sync handler should check it and return early."""
        return self._cancelled

    def request_cancel(self) -> None:
        """Mark the attempt as asked to stop (what the runtime does on cancel or timeout)."""
        self._cancelled = True

    def time_left(self) -> float:
        """Seconds until the attempt deadline (negative once it passed).

        Works in sync handlers (on their thread) as in async ones: ``monotonic_deadline`` is on
        the ``time.monotonic()`` clock, which asyncio's event loop clock is.
        """
        return self.monotonic_deadline - time.monotonic()

    def __repr__(self) -> str:
        return (
            f"Envelope(id={self.id}, kind={self.kind!r}, attempt={self.attempt}/"
            f"{self.max_attempts}, external_key={self.external_key!r})"
        )


class DecisionKind(enum.Enum):
    """The choices a :class:`Decision` carries."""

    DEFAULT = "default"
    RETRY_NOW = "retry_now"
    RETRY_AFTER = "retry_after"
    DROP = "drop"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class Decision:
    """What a failure hook wants done with the failed task."""

    kind: DecisionKind = DecisionKind.DEFAULT
    delay: float = field(default=0.0)

    @classmethod
    def default(cls) -> Decision:
        """Retry after the kind's delayer (or end ``no_attempts_left`` when none are left)."""
        return cls(DecisionKind.DEFAULT)

    @classmethod
    def retry_now(cls) -> Decision:
        """Retry at once, without the delayer's wait (if attempts are left)."""
        return cls(DecisionKind.RETRY_AFTER, 0.0)

    @classmethod
    def retry_after(cls, seconds: float) -> Decision:
        """Retry after ``seconds`` instead of the delayer's delay (if attempts are left)."""
        seconds = float(seconds)
        if not 0 <= seconds <= MAX_SECONDS:  # also rejects NaN
            raise ValueError(
                f"retry_after needs a delay from 0 to {MAX_SECONDS:.0f}s (10 years),"
                f" got {seconds!r}"
            )
        return cls(DecisionKind.RETRY_AFTER, seconds)

    @classmethod
    def drop(cls) -> Decision:
        """No more attempts: the task ends ``no_attempts_left``."""
        return cls(DecisionKind.DROP)

    @classmethod
    def cancel(cls) -> Decision:
        """End the task as ``cancelled``, with no further attempts."""
        return cls(DecisionKind.CANCEL)


Invoker = Callable[[Envelope], Awaitable[Any]]
"""The handler as stamps see it: an async callable taking the envelope."""

Stamp = Callable[[Invoker], Invoker]
"""Middleware: takes the next invoker and returns one that wraps it."""
