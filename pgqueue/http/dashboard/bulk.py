"""Bulk actions of the task list: which tasks a retry or a cancel applies to, and how many."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pgqueue.http.dashboard.data import (
    FilterError,
    KindRow,
    QueueAccess,
    TaskFilter,
)


@dataclass(frozen=True, slots=True)
class BulkPlan:
    """What a bulk action runs on: the list's filter narrowed to the statuses it applies to."""

    task_filter: TaskFilter
    statuses: tuple[str, ...]
    by_kind: bool = False  # a retry of a whole kind: one retry_tasks call
    error: str | None = None


def bulk_plan(params: Any, action: str, access: QueueAccess) -> BulkPlan:
    base = TaskFilter.from_query(params)
    if action not in ("retry", "cancel"):
        return BulkPlan(base, (), error="unknown bulk action")
    allowed = ("no_attempts_left",) if action == "retry" else ("new", "must_retry", "blocked")
    if base.status and base.status not in allowed:
        wanted = " or ".join(allowed)
        return BulkPlan(base, (), error=f"this action applies to {wanted} tasks only")
    statuses = (base.status,) if base.status else allowed
    shown = replace(base, status=statuses[0]) if len(statuses) == 1 else base
    try:
        shown.validate()
    except FilterError as exc:
        return BulkPlan(shown, statuses, error=str(exc))
    if action == "retry":
        if base.kind and not base.key_prefix and not base.payload:
            return BulkPlan(shown, statuses, by_kind=True)  # one statement, oldest first
        if not access.can("retry_task"):
            return BulkPlan(
                shown,
                statuses,
                error="retrying exhausted tasks works per kind: filter by kind only",
            )
    if action == "cancel" and not access.can("cancel_task"):
        return BulkPlan(shown, statuses, error="this service cannot cancel tasks by id")
    return BulkPlan(shown, statuses)


async def bulk_count(access: QueueAccess, bulk: BulkPlan, kinds: dict[str, KindRow]) -> int:
    """How many tasks the action would change: from the kind's exact open counts when the
    filter is a kind alone, else by walking the filter."""
    task_filter = bulk.task_filter
    if task_filter.kind and not task_filter.key_prefix and not task_filter.payload:
        row = kinds.get(task_filter.kind)
        return 0 if row is None else sum(int(row.counts.get(s, 0)) for s in bulk.statuses)
    return len(await bulk_ids(access, bulk))


async def bulk_ids(access: QueueAccess, bulk: BulkPlan) -> list[int]:
    ids: list[int] = []
    for status in bulk.statuses:
        ids.extend(await access.matching_ids(replace(bulk.task_filter, status=status)))
    return ids
