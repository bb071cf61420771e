"""The per-minute throughput history."""

from __future__ import annotations

from pgqueue.store.executor import Operation, Statement, Steps
from pgqueue.store.operations.checks import check_int_range
from pgqueue.store.queries import Queries
from pgqueue.task import (
    ThroughputPoint,
    validate_kind_name,
)

MAX_THROUGHPUT_MINUTES = 7 * 24 * 60 * 5


def read_throughput(
    queries: Queries, kind: str | None = None, minutes: int = 60
) -> Operation[list[ThroughputPoint]]:
    """Per-minute outcome counts of the last ``minutes`` minutes (minutes without outcomes have
    no point), oldest first."""
    if kind is not None:
        validate_kind_name(kind)
    check_int_range("minutes", minutes, 1, MAX_THROUGHPUT_MINUTES)

    def steps() -> Steps[list[ThroughputPoint]]:
        rows = yield Statement(queries["read_throughput"], {"kind": kind, "minutes": minutes})
        return [
            ThroughputPoint(k, minute, int(s), int(f), int(e), int(c))
            for k, minute, s, f, e, c in rows
        ]

    return Operation(steps())
