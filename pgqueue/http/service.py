"""What the routes do with the queue: enqueue with overrides, lookups, health."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import NamedTuple

from pgqueue.aio import cancel_and_wait
from pgqueue.async_queue import AsyncQueue
from pgqueue.audit import Actor, current_actor
from pgqueue.options import KindOptions
from pgqueue.registry import KindRegistry, KindSpec
from pgqueue.store import operations
from pgqueue.store.executor import Operation
from pgqueue.task import Task

HEALTH_TIMEOUT_SECONDS = 2.0
# Options of a kind this service knows only from the database, for admin calls (retry).
ADMIN_KIND_OPTIONS = KindOptions(attempt_timeout=60.0)


class _MaxAttemptsOverride(KindRegistry):
    """The queue's registry, with one kind's ``max_attempts`` replaced (per request)."""

    def __init__(self, base: KindRegistry, kind: str, max_attempts: int) -> None:
        super().__init__()
        self._base = base
        self._kind = kind
        self._max_attempts = max_attempts

    def get(self, kind: str) -> KindSpec:
        spec = self._base.get(kind)
        if kind != self._kind:
            return spec
        options = replace(spec.options, max_attempts=self._max_attempts)
        return KindSpec(spec.kind, options, spec.handler)


async def push(
    queue: AsyncQueue, tasks: Sequence[Task], delay: float, max_attempts: int | None = None
) -> operations.Pushed:
    """Push ``tasks`` through the queue's own operation, optionally overriding max_attempts
    (only for single-kind pushes, which is what the API allows); the ids and the timestamps
    the database stored."""
    registry = queue.registry
    if max_attempts is not None:
        registry = _MaxAttemptsOverride(registry, tasks[0].kind, max_attempts)
    queue.registry.get(tasks[0].kind)  # unknown kind: UnknownKind before anything else
    operation = operations.push_tasks_returning_times(registry, queue.queries, tasks, delay)
    actor = current_actor()
    detail: dict[str, object] = {"delay": delay} if delay else {}
    if max_attempts is not None:
        detail["max_attempts"] = max_attempts
    return await queue.executor.run(
        operations.audited_entries(
            queue.queries, operation, lambda pushed: _enqueued(actor, tasks, pushed.ids, detail)
        )
    )


def _enqueued(
    actor: Actor,
    tasks: Sequence[Task],
    ids: Sequence[int | None],
    detail: dict[str, object] | None = None,
) -> list[tuple[Actor, operations.Action, int]]:
    """One audit entry per task pushed through the service (none for a duplicate key)."""
    return [
        (
            actor,
            operations.Action(
                "enqueue",
                task.kind,
                task_id,
                {"external_key": task.external_key, **(detail or {})}
                if task.external_key is not None
                else dict(detail or {}),
            ),
            1,
        )
        for task, task_id in zip(tasks, ids, strict=True)
        if task_id is not None
    ]


async def existing_task_id(queue: AsyncQueue, kind: str, external_key: str) -> int | None:
    return await queue.executor.run(
        operations.find_task_id_by_key(queue.queries, kind, external_key)
    )


async def retry(
    queue: AsyncQueue, registry: KindRegistry, kind: str, attempts: int, limit: int
) -> int:
    """``retry_tasks`` through ``registry`` (which may hold a kind known only to the DB)."""
    operation = operations.retry_tasks(registry, queue.queries, kind, attempts, limit)
    action = operations.Action("retry_kind", kind, detail={"attempts": attempts, "limit": limit})
    return await queue.executor.run(operations.audited(queue.queries, operation, action, int))


def _ping(queue: AsyncQueue) -> Operation[datetime]:
    return operations.database_now(queue.queries)


async def database_reachable(queue: AsyncQueue) -> str | None:
    """``None`` when the database answers within the bound, else why not.

    Concurrent checks share one ping, and a ping that overruns the bound is left to finish
    rather than cancelled (cancelling a connection attempt can leave a pool half-opened).
    """
    ping: asyncio.Task[object] | None = _PINGS.get(id(queue))
    if ping is None or ping.done():
        ping = asyncio.ensure_future(queue.executor.run(_ping(queue)))
        ping.add_done_callback(_consume)
        _PINGS[id(queue)] = ping
    done, _ = await asyncio.wait({ping}, timeout=HEALTH_TIMEOUT_SECONDS)
    if not done:
        return f"the database did not answer within {HEALTH_TIMEOUT_SECONDS:g}s"
    error = ping.exception()
    if error is not None:
        return f"the database is unreachable: {type(error).__name__}"
    return None


_PINGS: dict[int, asyncio.Task[object]] = {}


async def cancel_pings() -> None:
    """Cancel health pings still waiting (a dead database), before the queue closes."""
    await cancel_and_wait(_PINGS.values())
    _PINGS.clear()


def _consume(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()  # mark retrieved: a failed ping is reported, not logged as lost


def _coalesced_entries(
    actors: Sequence[Actor], tasks: Sequence[Task], pushed: operations.Pushed
) -> list[tuple[Actor, operations.Action, int]]:
    """The audit entries of a coalesced push: each task under its own request's actor."""
    entries = []
    for actor, task, task_id in zip(actors, tasks, pushed.ids, strict=True):
        entries.extend(_enqueued(actor, [task], [task_id]))
    return entries


class Stored(NamedTuple):
    """One pushed task: its id (``None`` for a duplicate key) and the timestamps stored."""

    task_id: int | None
    created_at: datetime | None
    delayed_till: datetime | None


class PushCoalescer:
    """Joins concurrent single pushes into one multi-row statement.

    A request whose task may travel with others (no per-task option, an uncapped kind, no
    delay) waits here; up to ``max_flushers`` flushes run at once, each taking everything that
    waits (at most ``max_batch`` tasks) in one ``push_tasks`` statement. Under light load every
    task is flushed at once, alone; under heavy load tasks share round trips and commits. A
    task's id (with the ``created_at`` and ``delayed_till`` its statement stored) is returned
    only after its statement committed; a failed statement fails every task in it (nothing of
    it was written).
    """

    def __init__(self, queue: AsyncQueue, max_flushers: int = 4, max_batch: int = 500) -> None:
        self.queue = queue
        self.max_flushers = max_flushers
        self.max_batch = max_batch
        self._waiting: list[tuple[Task, Actor, asyncio.Future[Stored]]] = []
        self._flushers = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def accepts(self, task: Task, delay: float, max_attempts: int | None) -> bool:
        if delay != 0 or max_attempts is not None:
            return False
        spec = self.queue.registry.get(task.kind)
        return spec.options.max_pending is None

    async def push(self, task: Task) -> Stored:
        # Validate alone first, so one bad task never fails the others of its batch.
        operations.push_tasks(self.queue.registry, self.queue.queries, [task], 0)
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._waiting.append((task, current_actor(), future))
        if self._flushers < self.max_flushers:
            self._flushers += 1
            flush = asyncio.ensure_future(self._flush())
            self._tasks.add(flush)
            flush.add_done_callback(self._tasks.discard)
        return await future

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                tasks = [task for task, _, _ in batch]
                actors = [actor for _, actor, _ in batch]
                operation = operations.push_tasks_returning_times(
                    self.queue.registry, self.queue.queries, tasks, 0
                )
                try:
                    pushed = await self.queue.executor.run(
                        operations.audited_entries(
                            self.queue.queries,
                            operation,
                            functools.partial(_coalesced_entries, actors, tasks),
                        )
                    )
                except BaseException as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for (_, _, future), task_id in zip(batch, pushed.ids, strict=True):
                        if not future.done():
                            future.set_result(
                                Stored(task_id, pushed.created_at, pushed.delayed_till)
                            )
        finally:
            self._flushers -= 1
