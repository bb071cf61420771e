"""Kinds: pause and resume, the known-kind check, the per-kind listing and overview."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgqueue.registry import KindRegistry
from pgqueue.store.executor import Operation, Statement, Steps
from pgqueue.store.operations.checks import unknown_kind
from pgqueue.store.operations.limits import read_kind_limits
from pgqueue.store.queries import Queries
from pgqueue.task import (
    COUNTED_STATUSES,
    KindInfo,
    validate_kind_name,
)

EXACT_FINISHED_BELOW = 100_000  # table rows (planner estimate) below which finished are counted


def pause_kind(queries: Queries, kind: str, registered: bool) -> Operation[None]:
    """Pause ``kind`` cluster-wide (claims skip it; pushes still work) and notify workers.

    ``registered`` says the kind is known in this process; otherwise the database must know it
    (a kinds row or a task), else :class:`UnknownKind`.
    """
    return _set_paused(queries, "pause_kind", kind, registered)


def resume_kind(queries: Queries, kind: str, registered: bool) -> Operation[None]:
    """Resume ``kind`` cluster-wide and wake its workers at once."""
    return _set_paused(queries, "resume_kind", kind, registered)


def _set_paused(queries: Queries, name: str, kind: str, registered: bool) -> Operation[None]:
    validate_kind_name(kind)

    def steps() -> Steps[None]:
        rows = yield Statement(
            queries[name], {"kind": kind, "registered": registered, "channel": queries.channel}
        )
        if not rows:
            raise unknown_kind(kind)
        return None

    return Operation(steps())


def require_known_kind(registry: KindRegistry, queries: Queries, kind: str) -> Operation[None]:
    """Raise :class:`UnknownKind` unless the kind is in ``registry`` or in the database."""
    validate_kind_name(kind)
    registered = kind in registry

    def steps() -> Steps[None]:
        if registered:
            return None
        rows = yield Statement(queries["kind_exists"], {"kind": kind})
        if not rows[0][0]:
            raise unknown_kind(kind)
        return None

    return Operation(steps())


def list_kinds(registry: KindRegistry, queries: Queries) -> Operation[list[KindInfo]]:
    """Every kind known to the database or this process, sorted by name."""

    def steps() -> Steps[list[KindInfo]]:
        overview = yield from read_kind_overview(queries).steps
        names = sorted(overview.kinds | {spec.kind for spec in registry})
        overrides = yield from read_kind_limits(queries, names).steps
        return [
            KindInfo(
                kind=name,
                paused=name in overview.paused,
                counts=overview.counts_of(name),
                oldest_due_seconds=overview.oldest_due.get(name),
                paused_at=overview.paused.get(name),
                finished_estimated=overview.estimated,
                options=registry.get(name).options if name in registry else None,
                limit_overrides=overrides.get(name),
            )
            for name in names
        ]

    return Operation(steps())


class KindOverview:
    """The rows of ``kind_overview`` by kind: counts, lag and pause state (read by metrics)."""

    def __init__(self) -> None:
        self.kinds: set[str] = set()
        self.counts: dict[tuple[str, str], int] = {}
        self.oldest_due: dict[str, float] = {}
        self.paused: dict[str, Any] = {}
        self.estimated = False

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]]) -> KindOverview:
        overview = cls()
        for kind, status, tasks, due, oldest, estimated, paused_at in rows:
            overview.kinds.add(kind)
            if status is None:  # the kinds row
                if paused_at is not None:
                    overview.paused[kind] = paused_at
                continue
            counts = overview.counts
            counts[kind, status] = counts.get((kind, status), 0) + int(tasks)
            if due:
                counts[kind, "due"] = counts.get((kind, "due"), 0) + int(due)
            if oldest is not None:
                overview.oldest_due[kind] = max(float(oldest), overview.oldest_due.get(kind, 0.0))
            overview.estimated = overview.estimated or bool(estimated)
        return overview

    def counts_of(self, kind: str) -> dict[str, int]:
        return {status: self.counts.get((kind, status), 0) for status in COUNTED_STATUSES}


def read_kind_overview(queries: Queries) -> Operation[KindOverview]:
    """The one statement behind ``list_kinds`` and the ``pgqueue_tasks`` gauges."""

    def steps() -> Steps[KindOverview]:
        rows = yield Statement(
            queries["kind_overview"],
            {"schema": queries.schema, "exact_below": EXACT_FINISHED_BELOW},
        )
        return KindOverview.from_rows(rows)

    return Operation(steps())


def count_tasks_by_status(queries: Queries) -> Operation[dict[tuple[str, str], int]]:
    """Number of tasks per (kind, derived status)."""

    def steps() -> Steps[dict[tuple[str, str], int]]:
        rows = yield Statement(queries["count_tasks_by_status"], {})
        return {(kind, status): int(count) for kind, status, count in rows}

    return Operation(steps(), readonly=True)
