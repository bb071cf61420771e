"""What the dashboard reads and changes, through the queue facade it was given.

The dashboard works with either facade: a blocking ``Queue`` method runs in the server's
thread pool, an ``AsyncQueue`` method is awaited. Nothing here talks SQL.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from pgqueue.limits import describe_limits

STATUSES = (
    "new",
    "must_retry",
    "processing",
    "no_attempts_left",
    "cancelled",
    "succeeded",
    "blocked",
)
PAGE_SIZE = 50
# Bulk actions walk the filter page by page; this bounds one confirmation's work.
BULK_LIMIT = 100_000


class FilterError(ValueError):
    """A task-list filter the dashboard cannot use (shown to the user, nothing runs)."""


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """The task list's filter, as given in the query string."""

    kind: str = ""
    status: str = ""
    key_prefix: str = ""
    payload: str = ""  # JSON text; rows whose payload contains it (jsonb @>)

    @classmethod
    def from_query(cls, params: Any) -> TaskFilter:
        return cls(
            kind=(params.get("kind") or "").strip(),
            status=(params.get("status") or "").strip(),
            key_prefix=params.get("key_prefix") or "",
            payload=(params.get("payload") or "").strip(),
        )

    def payload_value(self) -> Any:
        if not self.payload:
            return None
        try:
            return json.loads(self.payload)
        except ValueError as exc:
            raise FilterError(f"payload filter is not valid JSON: {exc}") from None

    def validate(self) -> TaskFilter:
        if self.status and self.status not in STATUSES:
            raise FilterError(f"unknown status {self.status!r}")
        self.payload_value()
        return self

    def list_arguments(self) -> dict[str, Any]:
        return {
            "kind": self.kind or None,
            "status": self.status or None,
            "key_prefix": self.key_prefix or None,
            "payload_contains": self.payload_value(),
        }

    def query(self) -> dict[str, str]:
        """The non-empty fields, for links that keep the filter."""
        pairs = {
            "kind": self.kind,
            "status": self.status,
            "key_prefix": self.key_prefix,
            "payload": self.payload,
        }
        return {name: value for name, value in pairs.items() if value}


@dataclass(slots=True)
class KindRow:
    """One kind on the overview and the kinds page."""

    kind: str
    paused: bool
    counts: dict[str, int]
    lag_seconds: float | None
    workers_busy: int | None = None
    workers_total: int | None = None
    recent: dict[str, int] = field(default_factory=dict)  # outcomes in the last hour
    options: dict[str, str] = field(default_factory=dict)
    finished_estimated: bool = False
    max_attempts: int | None = None
    limits: str = ""  # the limits in force: operators' overrides (marked *) or the code's


_SHOWN_OPTIONS = (
    "worker_count",
    "max_attempts",
    "attempt_timeout",
    "max_task_error_messages",
    "terminal_tasks_ttl",
    "max_pending",
    "delayer",
)


def _shown_options(options: Any) -> dict[str, str]:
    """A kind's options as text (empty when the kind is not declared in this process)."""
    if options is None:
        return {}
    shown = {}
    for name in _SHOWN_OPTIONS:
        value = getattr(options, name, None)
        dynamic = callable(value) and name != "delayer"
        shown[name] = "dynamic" if dynamic else str(value)
    return shown


class QueueAccess:
    """Calls the facade's methods, blocking or awaitable alike.

    The per-kind snapshot (counts, lag, last hour's outcomes) is shared by every viewer for
    ``snapshot_seconds``: a dozen open overviews polling each second cost one query a second,
    not a dozen. Kind names (for the filter and enqueue forms) are kept ``names_seconds``.
    Every action drops both, so a page shown after an action is fresh.
    """

    def __init__(
        self,
        queue: Any,
        *,
        snapshot_seconds: float = 1.0,
        names_seconds: float = 10.0,
        worker_queue: Any = None,
    ) -> None:
        self.queue = queue
        self.worker_queue = worker_queue if worker_queue is not None else queue
        self.snapshot_seconds = snapshot_seconds
        self.names_seconds = names_seconds
        self._snapshot: tuple[float, list[KindRow]] | None = None
        self._names: tuple[float, list[str]] | None = None
        self.health_seconds = 10.0  # pg_stat figures move slowly; read them at most this often
        self._health: tuple[float, Any] | None = None
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._snapshot = None
        self._names = None

    async def kinds(self) -> list[KindRow]:
        """The per-kind snapshot, at most ``snapshot_seconds`` old."""
        async with self._lock:  # concurrent viewers wait for one refresh instead of each running it
            cached = self._snapshot
            if cached is not None and time.monotonic() - cached[0] < self.snapshot_seconds:
                return cached[1]
            rows = await self._read_kinds()
            self._snapshot = (time.monotonic(), rows)
            self._names = (time.monotonic(), sorted(row.kind for row in rows))
            return rows

    async def kind_names(self) -> list[str]:
        """Known kind names, sorted, at most ``names_seconds`` old."""
        cached = self._names
        if cached is not None and time.monotonic() - cached[0] < self.names_seconds:
            return cached[1]
        await self.kinds()
        return self._names[1] if self._names is not None else []

    async def record(self, action: Any, rows: int) -> None:
        """Write one audit entry under the current actor (a bulk action's summary, an
        enqueue), whichever facade the dashboard has."""
        from pgqueue.store import operations

        op = operations.record_audit(self.queue.queries, action, rows)
        run = self.queue.executor.run
        if inspect.iscoroutinefunction(run):
            await run(op)
        else:
            await run_in_threadpool(run, op)

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.queue, name)
        if inspect.iscoroutinefunction(method):
            return await method(*args, **kwargs)
        return await run_in_threadpool(method, *args, **kwargs)

    async def _read_kinds(self) -> list[KindRow]:
        infos = await self.call("list_kinds")
        recent = await self.recent_outcomes()
        rows = []
        for info in infos:
            busy, total = self.workers(info.kind)
            rows.append(
                KindRow(
                    kind=info.kind,
                    paused=bool(info.paused),
                    counts=dict(info.counts),
                    lag_seconds=info.oldest_due_seconds,
                    workers_busy=busy,
                    workers_total=total,
                    recent=recent.get(info.kind, {}),
                    options=_shown_options(getattr(info, "options", None)),
                    finished_estimated=bool(getattr(info, "finished_estimated", False)),
                    max_attempts=getattr(getattr(info, "options", None), "max_attempts", None),
                    limits=describe_limits(
                        getattr(info, "limit_overrides", None), getattr(info, "options", None)
                    ),
                )
            )
        return rows

    async def table_health(self) -> Any:
        """The tasks table's upkeep (dead rows, size, problems), at most ``health_seconds`` old;
        ``None`` when this queue cannot tell (a sharded queue, a custom one)."""
        if not self.can("table_health"):
            return None
        cached = self._health
        if cached is not None and time.monotonic() - cached[0] < self.health_seconds:
            return cached[1]
        health = await self.call("table_health")
        self._health = (time.monotonic(), health)
        return health

    async def recent_outcomes(self, minutes: int = 60) -> dict[str, dict[str, int]]:
        """Outcomes per kind over the last ``minutes`` (summed throughput history)."""
        points = await self.call("throughput", kind=None, minutes=minutes)
        totals: dict[str, dict[str, int]] = {}
        for point in points:
            row = totals.setdefault(point.kind, {})
            for name in ("succeeded", "failed", "exhausted", "cancelled"):
                row[name] = row.get(name, 0) + int(getattr(point, name))
        return totals

    def can(self, name: str) -> bool:
        """Whether the facade offers ``name`` (some actions arrive with the HTTP service)."""
        return callable(getattr(self.queue, name, None))

    def workers(self, kind: str) -> tuple[int | None, int | None]:
        """Busy and total workers of ``kind`` in this process, when this process runs it."""
        runtime = getattr(self.worker_queue, "_runtime", None)
        worker = getattr(runtime, "workers", {}).get(kind) if runtime is not None else None
        if worker is None:
            return None, None
        return len(worker.inflight), int(worker.size)

    async def page(
        self, task_filter: TaskFilter, before_id: int | None, limit: int = PAGE_SIZE
    ) -> tuple[list[Any], int | None]:
        """One page, newest first, and the cursor of the next page (``None`` at the end)."""
        rows = await self.call(
            "list_tasks", **task_filter.list_arguments(), before_id=before_id, limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].id if more and rows else None)

    async def matching_ids(self, task_filter: TaskFilter, limit: int = BULK_LIMIT) -> list[int]:
        """Ids of every task matching the filter (up to ``limit``), walking the cursor."""
        ids: list[int] = []
        before: int | None = None
        while len(ids) < limit:
            rows = await self.call(
                "list_tasks", **task_filter.list_arguments(), before_id=before, limit=1000
            )
            ids.extend(row.id for row in rows)
            if len(rows) < 1000:
                break
            before = rows[-1].id
        return ids[:limit]
