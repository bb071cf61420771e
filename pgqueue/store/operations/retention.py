"""Retention: which kinds hold expired terminal tasks, and the sweep that deletes them."""

from __future__ import annotations

from collections.abc import Iterable

from pgqueue.store.executor import Operation, Statement, Steps
from pgqueue.store.queries import Queries

MAX_SWEEP_BATCHES = 100  # per sweep; the rest waits for the next period


def sweep_terminal_tasks(
    queries: Queries,
    kind: str,
    ttl: float,
    period: float,
    batch_size: int,
    throughput_window: float | None = None,
) -> Operation[int | None]:
    """Delete a kind's expired terminal tasks (and throughput rows and audit entries older
    than ``throughput_window`` seconds) if this process wins its maintenance lock.

    Returns the number deleted, or ``None`` when another process holds the lock or swept
    within ``period``.
    """

    def steps() -> Steps[int | None]:
        yield Statement(queries["register_kind_row"], {"kind": kind})
        locked = yield Statement(queries["lock_kind_for_sweep"], {"kind": kind, "period": period})
        if not locked:
            return None
        deleted = 0
        for _ in range(MAX_SWEEP_BATCHES):
            rows = yield Statement(
                queries["sweep_terminal_tasks"], {"kind": kind, "ttl": ttl, "limit": batch_size}
            )
            deleted += len(rows)
            if len(rows) < batch_size:
                break
        if throughput_window is not None:
            window = {"kind": kind, "window": throughput_window}
            yield Statement(queries["prune_throughput"], window)
            yield Statement(queries["prune_audit_log"], window)
        yield Statement(queries["mark_kind_swept"], {"kind": kind})
        return deleted

    return Operation(steps(), transactional=True)


def find_sweepable_kinds(
    queries: Queries, kinds: Iterable[str], ttls: Iterable[float], windows: Iterable[float]
) -> Operation[list[str]]:
    """Which of ``kinds`` (with their terminal TTLs and throughput windows, in seconds) hold a
    terminal task older than the TTL or a throughput row older than the window."""

    def steps() -> Steps[list[str]]:
        rows = yield Statement(
            queries["find_sweepable_kinds"],
            {"kinds": list(kinds), "ttls": list(ttls), "windows": list(windows)},
        )
        return [row[0] for row in rows]

    return Operation(steps())
