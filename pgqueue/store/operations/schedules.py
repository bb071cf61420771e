"""Periodic schedules: the task of one slot, pushed once fleet-wide."""

from __future__ import annotations

from datetime import datetime

from pgqueue.store.executor import Operation, Statement, Steps
from pgqueue.store.queries import Queries


def push_periodic_task(
    queries: Queries,
    kind: str,
    slot: datetime,
    payload: str | None,
    external_key: str,
    max_attempts: int,
    priority: int = 0,
) -> Operation[int | None]:
    """Enqueue the task of a periodic slot (``payload`` already JSON, at the kind's default
    ``priority``) unless some process has enqueued this or a later slot; returns the new
    task's id, or ``None``."""

    def steps() -> Steps[int | None]:
        rows = yield Statement(
            queries["push_periodic_task"],
            {
                "kind": kind,
                "slot": slot,
                "payload": payload,
                "external_key": external_key,
                "max_attempts": max_attempts,
                "priority": priority,
                "channel": queries.channel,
            },
        )
        return rows[0][0] if rows else None

    return Operation(steps())
