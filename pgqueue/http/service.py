"""What the routes do with the queue: enqueue with overrides, lookups, health."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from pgqueue import operations
from pgqueue.async_queue import AsyncQueue
from pgqueue.executor import Operation, Statement, Steps
from pgqueue.options import KindOptions
from pgqueue.registry import KindRegistry, KindSpec
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
) -> list[int | None]:
    """Push ``tasks`` through the queue's own operation, optionally overriding max_attempts
    (only for single-kind pushes, which is what the API allows)."""
    registry = queue.registry
    if max_attempts is not None:
        registry = _MaxAttemptsOverride(registry, tasks[0].kind, max_attempts)
    queue.registry.get(tasks[0].kind)  # unknown kind: UnknownKind before anything else
    operation = operations.push_tasks(registry, queue.queries, tasks, delay)
    return await queue.executor.run(operation)


async def existing_task_id(queue: AsyncQueue, kind: str, external_key: str) -> int | None:
    return await queue.executor.run(
        operations.find_task_id_by_key(queue.queries, kind, external_key)
    )


async def retry(
    queue: AsyncQueue, registry: KindRegistry, kind: str, attempts: int, limit: int
) -> int:
    """``retry_tasks`` through ``registry`` (which may hold a kind known only to the DB)."""
    return await queue.executor.run(
        operations.retry_tasks(registry, queue.queries, kind, attempts, limit)
    )


def _ping(queue: AsyncQueue) -> Operation[object]:
    def steps() -> Steps[object]:
        rows = yield Statement(queue.queries["database_now"], {})
        return rows[0][0]

    return Operation(steps())


async def database_reachable(queue: AsyncQueue) -> str | None:
    """``None`` when the database answers within the bound, else why not."""
    try:
        await asyncio.wait_for(queue.executor.run(_ping(queue)), HEALTH_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"the database did not answer within {HEALTH_TIMEOUT_SECONDS:g}s"
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        return f"the database is unreachable: {type(exc).__name__}"
    return None
