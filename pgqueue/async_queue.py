"""``AsyncQueue``: the awaitable facade, for asyncio applications."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, cast

from pgqueue.base import Delay, QueueBase, QueueState
from pgqueue.envelope import Stamp
from pgqueue.executor import AsyncExecutor
from pgqueue.queries import DEFAULT_SCHEMA
from pgqueue.runtime import Runtime, StopMode
from pgqueue.task import Task, TaskInfo


def async_executor_for(target: Any, max_size: int = 8) -> AsyncExecutor:
    """An async executor for a DSN, a psycopg ``AsyncConnectionPool``, an asyncpg ``Pool`` or a
    ready executor."""
    if isinstance(target, str):
        from pgqueue.adapters.psycopg import AsyncPsycopgExecutor

        return cast(AsyncExecutor, AsyncPsycopgExecutor(target, max_size=max_size))
    if all(hasattr(target, name) for name in ("run", "run_in", "listen", "open", "close")):
        return cast(AsyncExecutor, target)
    type_name = f"{type(target).__module__}.{type(target).__qualname__}"
    if type_name.startswith("psycopg_pool"):
        from pgqueue.adapters.psycopg import AsyncPsycopgExecutor

        return cast(AsyncExecutor, AsyncPsycopgExecutor(target))
    if type_name.startswith("asyncpg.pool"):
        from pgqueue.adapters.asyncpg import AsyncpgExecutor

        return cast(AsyncExecutor, AsyncpgExecutor(target))
    if type_name.startswith("sqlalchemy"):
        from pgqueue.adapters.sqlalchemy import AsyncSqlAlchemyExecutor

        return cast(AsyncExecutor, AsyncSqlAlchemyExecutor(target))
    raise TypeError(
        "AsyncQueue needs a DSN, a psycopg AsyncConnectionPool, an asyncpg Pool, a SQLAlchemy "
        "AsyncEngine or an executor,"
        f" got {type_name}"
    )


class AsyncQueue(QueueBase):
    """A durable task queue on PostgreSQL, with an awaitable API.

    ``target`` is a DSN (``postgresql://…``, run on psycopg), a psycopg ``AsyncConnectionPool``,
    an asyncpg ``Pool`` or an async executor from :mod:`pgqueue.adapters` (for instance
    ``AsyncpgExecutor(dsn)``).
    """

    def __init__(
        self,
        target: Any,
        *,
        schema: str = DEFAULT_SCHEMA,
        stamps: Sequence[Stamp] = (),
        max_connections: int = 8,
    ) -> None:
        super().__init__(schema=schema, stamps=stamps)
        self.executor = async_executor_for(target, max_connections)
        self._runtime: Runtime | None = None

    async def push_task(self, task: Task, delay: Delay = 0) -> int | None:
        """Push one task; its id, or ``None`` when its ``(kind, external_key)`` exists."""
        return (await self.executor.run(self._push_one_op(task, delay)))[0]

    async def push_task_tx(self, tx: Any, task: Task, delay: Delay = 0) -> int | None:
        """Push one task in the caller's open transaction (never commits or rolls back)."""
        return (await self.executor.run_in(tx, self._push_one_op(task, delay)))[0]

    async def push_tasks(self, tasks: Sequence[Task], delay: Delay = 0) -> list[int | None]:
        """Push many tasks in one statement; ids aligned with ``tasks``."""
        return await self.executor.run(self._push_op(tasks, delay))

    async def push_tasks_tx(
        self, tx: Any, tasks: Sequence[Task], delay: Delay = 0
    ) -> list[int | None]:
        """Push many tasks in the caller's open transaction."""
        return await self.executor.run_in(tx, self._push_op(tasks, delay))

    async def cancel_task_by_key(self, kind: str, external_key: str) -> bool:
        """Cancel the waiting or running task with this key; True when one was cancelled."""
        return await self.executor.run(self._cancel_op(kind, external_key))

    async def retry_tasks(self, kind: str, attempts: int = 1, limit: int = 1000) -> int:
        """Give up to ``limit`` exhausted tasks fresh ``attempts``; the number revived."""
        return await self.executor.run(self._retry_op(kind, attempts, limit))

    async def get_task(self, task_id: int, *, replica_ok: bool = False) -> TaskInfo | None:
        """One task by id; ``replica_ok`` lets a primary/replica executor read a replica."""
        return await self.executor.run(self._get_op(task_id, replica_ok))

    async def count_tasks(self) -> dict[tuple[str, str], int]:
        """Number of tasks per ``(kind, status)``, ``processing`` derived."""
        return await self.executor.run(self._count_op())

    async def start(self) -> None:
        """Start the claim loops of every registered kind and the sweeper; idempotent."""
        self._check_open()
        if self._state is QueueState.RUNNING:
            return
        runtime = Runtime(
            self.registry, self.queries, self.executor, self.stamps, self.events, self.periodics
        )
        await runtime.start()
        self._runtime = runtime
        self._state = QueueState.RUNNING

    async def stop(self, mode: StopMode = StopMode.DRAIN) -> None:
        """Stop claiming; drain in-flight attempts, or abort them and hand their tasks back."""
        if self._runtime is None or self._state is not QueueState.RUNNING:
            return
        self._state = QueueState.STOPPING
        try:
            await self._runtime.stop(StopMode(mode))
        finally:
            self._runtime = None
            self._state = QueueState.STOPPED

    async def wait_listening(self) -> None:
        """Wait until the running queue listens for push notifications (for tests and tools)."""
        if self._runtime is not None:
            await self._runtime.listening.wait()

    async def close(self, mode: StopMode = StopMode.DRAIN) -> None:
        """Stop (drain by default) and release the connections; the queue is then unusable."""
        if self._state is QueueState.CLOSED:
            return
        await self.stop(mode)
        await self.executor.close()
        self._state = QueueState.CLOSED

    async def __aenter__(self) -> AsyncQueue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
