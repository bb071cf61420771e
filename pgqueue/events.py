"""Events the runtime reports as it works, for metrics, tests and tools.

Listeners are called on the runtime's event loop thread and must return quickly; an exception
in a listener is logged and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("pgqueue.events")


@dataclass(frozen=True, slots=True)
class TasksClaimed:
    kind: str
    task_ids: tuple[int, ...]
    lost_leases: int


@dataclass(frozen=True, slots=True)
class AttemptFinished:
    kind: str
    task_id: int
    attempt: int
    status: str  # the transition asked for: succeeded, must_retry, no_attempts_left, cancelled
    duration: float  # seconds the attempt ran
    timed_out: bool = False  # the attempt (or one of its hooks) ran past its timeout


@dataclass(frozen=True, slots=True)
class ResultsWritten:
    """Results applied in the database; ``applied`` is False for ones whose claim was gone."""

    results: tuple[tuple[int, str, str, bool], ...]  # (task id, kind, status, applied)


@dataclass(frozen=True, slots=True)
class ClaimsReleased:
    task_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TasksPushed:
    """Tasks inserted by this process's queue (duplicates of an existing key not counted)."""

    counts: tuple[tuple[str, int], ...]  # (kind, tasks inserted)


@dataclass(frozen=True, slots=True)
class KindPaused:
    """A worker of this process obeyed a pause (``paused``) or a resume of its kind."""

    kind: str
    paused: bool
    released: int  # buffered claims handed back


@dataclass(frozen=True, slots=True)
class TerminalTasksSwept:
    """The retention sweeper ran for a kind in this process (``deleted`` may be 0)."""

    kind: str
    deleted: int


Event = (
    TasksClaimed
    | AttemptFinished
    | ResultsWritten
    | ClaimsReleased
    | TerminalTasksSwept
    | TasksPushed
    | KindPaused
)
Listener = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns a function that removes it."""
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def emit(self, event: Event) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed", listener)
