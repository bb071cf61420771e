"""Who is acting: the actor that operator actions are recorded under in the audit log.

Every cancel, retry, pause and resume through a queue facade, every bulk action and every
enqueue through the HTTP service writes an entry to ``audit_log`` in the action's own
transaction. The entry names its actor: the HTTP service and the dashboard set it for the
request (the token's role, source ``api`` or ``dashboard``), the ``pgqueue`` CLI sets the OS
user (source ``cli``); any other caller is recorded as the OS user with source ``python``.
Set it yourself with :func:`acting_as`.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, Literal

from pgqueue.errors import InvalidOptions

Source = Literal["api", "dashboard", "cli", "python"]
SOURCES: tuple[Source, ...] = ("api", "dashboard", "cli", "python")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts (``name``: a token's role or label, an OS user) and through what
    (``source``). ``record=False`` writes no entry per call: a bulk action records one summary
    entry instead. ``detail`` is merged into each entry's detail (the client address, say)."""

    source: Source
    name: str
    record: bool = True
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InvalidOptions(f"audit source must be one of {', '.join(SOURCES)}")
        if not isinstance(self.name, str) or not 1 <= len(self.name) <= 200:
            raise InvalidOptions("an audit actor's name must be a string of 1 to 200 characters")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded operator action."""

    id: int
    at: datetime
    actor: str
    source: str
    action: str
    kind: str | None
    task_id: int | None
    detail: dict[str, Any]
    rows: int


@cache
def os_user() -> str:
    """The OS user this process runs as (``unknown`` when the system cannot say)."""
    try:
        return getpass.getuser() or "unknown"
    except (OSError, KeyError):
        return "unknown"


_ACTOR: ContextVar[Actor | None] = ContextVar("pgqueue_actor", default=None)


def current_actor() -> Actor:
    """The actor set by :func:`acting_as`, else the OS user with source ``python``."""
    actor = _ACTOR.get()
    return actor if actor is not None else Actor("python", os_user())


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    """Record the operator actions made inside the block (in this thread or task, and in the
    threads and tasks it starts) under ``actor``."""
    token = _ACTOR.set(actor)
    try:
        yield actor
    finally:
        _ACTOR.reset(token)


__all__ = ["SOURCES", "Actor", "AuditEntry", "Source", "acting_as", "current_actor", "os_user"]
