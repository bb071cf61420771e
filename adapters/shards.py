"""A queue over several independent PostgreSQL servers (shards), blocking and async.

A task goes to the shard that owns its slot: ``slot = stable_hash(kind, external_key) mod
1024``, and a :class:`SlotMap` (the same in every process) gives each slot a shard. So a key is
always pushed to the same shard and its idempotency holds there; keyless tasks take the slots in
turn, so they spread evenly. Adding a shard moves only the slots the new map gives it (see
``docs/scaling.md`` for the procedure that keeps keys idempotent while they move).

A sharded queue is one ordinary queue per shard (each with its own worker runtime: one claim
loop per kind per shard, LISTEN on each shard), plus routing: pushes go to their shard,
``push_tasks`` sends one statement per shard, admin calls fan out concurrently and merge. Task
ids are global: ``local_id * 1024 + shard`` (:func:`split_task_id`), so ``get_task`` finds the
shard; handlers and events see the shard's local id.

A workflow lives on one shard: its nodes settle each other inside one database, so
``push_workflow`` writes them all to the shard a keyless task would take next (nodes carry no
key), and ``push_workflow_tx`` to the shard of the caller's transaction. Its ids are global;
``get_workflow`` asks every shard for it.

A shard that is down slows nothing else: its claim loops back off on their own, the other
shards' loops keep draining, and a push routed to it fails within ``connect_timeout`` with
:class:`ShardUnavailable` (at once while it was seen down in the last ``retry_after`` seconds).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from pgqueue.async_queue import AsyncQueue
from pgqueue.base import Delay, QueueState
from pgqueue.errors import InvalidTask
from pgqueue.events import Listener
from pgqueue.options import KindOptions
from pgqueue.registry import Handler
from pgqueue.runtime import StopMode
from pgqueue.store.operations import LimitOverrides, WorkflowIds, WorkflowNode
from pgqueue.task import Task, TaskInfo
from pgqueue.workflow import Workflow

from .shard_routing import (
    MAX_SHARDS,
    NUM_SLOTS,
    ShardUnavailable,
    SlotMap,
    WrongShard,
    global_ids,
    global_task_id,
    global_workflow_ids,
    slot_of,
    split_task_id,
)
from .sharded_queue import AsyncShardedQueue
from .transactions import run_in_sync

T = TypeVar("T")

__all__ = [
    "MAX_SHARDS",
    "NUM_SLOTS",
    "AsyncShardedQueue",
    "ShardUnavailable",
    "ShardedQueue",
    "SlotMap",
    "WrongShard",
    "global_task_id",
    "slot_of",
    "split_task_id",
]


class ShardedQueue:
    """The blocking sharded queue: an :class:`AsyncShardedQueue` on a private event-loop
    thread (same names, same routing); ``push_*_tx`` run in the caller's thread on the caller's
    psycopg connection or SQLAlchemy session."""

    def __init__(self, shards: Sequence[Any], **options: Any) -> None:
        from pgqueue.queue import _LoopThread

        self._thread = _LoopThread()
        try:
            self._queue = self._thread.call(_build(shards, options))
        except BaseException:
            self._thread.close()
            raise
        self.routing = self._queue.routing

    @property
    def shards(self) -> list[AsyncQueue]:
        return self._queue.shards

    @property
    def state(self) -> QueueState:
        return self._queue.state

    def shard_for(self, kind: str, external_key: str) -> int:
        """The shard (index into the given shards) a task with this key is pushed to."""
        return self._queue.shard_for(kind, external_key)

    def register_kind(self, kind: str, handler: Handler, options: KindOptions) -> None:
        self._queue.register_kind(kind, handler, options)

    def declare_kind(self, kind: str, options: KindOptions) -> None:
        self._queue.declare_kind(kind, options)

    def add_periodic(
        self,
        kind: str,
        *,
        every: float | int | timedelta | None = None,
        cron: str | None = None,
        payload: Any = None,
        tz: str = "UTC",
    ) -> None:
        """See :meth:`AsyncShardedQueue.add_periodic`."""
        self._queue.add_periodic(kind, every=every, cron=cron, payload=payload, tz=tz)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._queue.subscribe(listener)

    def push_task(self, task: Task, delay: Delay = 0) -> int | None:
        return self._thread.call(self._queue.push_task(task, delay))

    def push_tasks(self, tasks: Sequence[Task], delay: Delay = 0) -> list[int | None]:
        return self._thread.call(self._queue.push_tasks(tasks, delay))

    def push_tasks_tx(self, tx: Any, tasks: Sequence[Task], delay: Delay = 0) -> list[int | None]:
        _, op = self._thread.call(self._queue._checked_push(tasks, delay))
        shard, local_ids = run_in_sync(tx, op)
        self._queue._report(shard, tasks, local_ids)
        return global_ids(shard, local_ids)

    def push_task_tx(self, tx: Any, task: Task, delay: Delay = 0) -> int | None:
        if not isinstance(task, Task):
            raise InvalidTask(f"expected a Task, got {type(task).__name__}")
        return self.push_tasks_tx(tx, [task], delay)[0]

    def push_workflow(self, workflow: Workflow) -> WorkflowIds:
        """See :meth:`AsyncShardedQueue.push_workflow`: every node on one shard."""
        return self._thread.call(self._queue.push_workflow(workflow))

    def push_workflow_tx(self, tx: Any, workflow: Workflow) -> WorkflowIds:
        """Every node of ``workflow`` in the caller's open transaction, on its shard."""
        op = self._thread.call(self._queue._checked_workflow(workflow))
        shard, local = run_in_sync(tx, op)
        self._queue.shards[shard]._report_workflow(workflow)
        return global_workflow_ids(shard, local)

    def get_workflow(self, workflow_id: str) -> list[WorkflowNode]:
        return self._thread.call(self._queue.get_workflow(workflow_id))

    def get_nodes(self, task_ids: Sequence[int]) -> dict[int, tuple[str, str, str]]:
        return self._thread.call(self._queue.get_nodes(task_ids))

    def cancel_task_by_key(self, kind: str, external_key: str) -> bool:
        return self._thread.call(self._queue.cancel_task_by_key(kind, external_key))

    def retry_tasks(self, kind: str, attempts: int = 1, limit: int = 1000) -> int:
        return self._thread.call(self._queue.retry_tasks(kind, attempts, limit))

    def set_limits(self, kind: str, **changes: Any) -> list[LimitOverrides]:
        return self._thread.call(self._queue.set_limits(kind, **changes))

    def clear_limits(self, kind: str, *, actor: str | None = None) -> list[LimitOverrides]:
        return self._thread.call(self._queue.clear_limits(kind, actor=actor))

    def get_limits(self, kind: str) -> list[LimitOverrides]:
        return self._thread.call(self._queue.get_limits(kind))

    def count_tasks(self) -> dict[tuple[str, str], int]:
        return self._thread.call(self._queue.count_tasks())

    def count_keys_in_slots(self, slots: Sequence[int]) -> dict[int, int]:
        """See :meth:`AsyncShardedQueue.count_keys_in_slots`."""
        return self._thread.call(self._queue.count_keys_in_slots(slots))

    def get_task(self, task_id: int, *, replica_ok: bool = False) -> TaskInfo | None:
        return self._thread.call(self._queue.get_task(task_id, replica_ok=replica_ok))

    def start(self) -> None:
        self._thread.call(self._queue.start())

    def stop(self, mode: StopMode = StopMode.DRAIN) -> None:
        self._thread.call(self._queue.stop(mode))

    def wait_listening(self, timeout: float | None = None) -> None:
        self._thread.call(asyncio.wait_for(self._queue.wait_listening(), timeout))

    def close(self, mode: StopMode = StopMode.DRAIN) -> None:
        if self._queue.state is QueueState.CLOSED:
            return
        try:
            self._thread.call(self._queue.close(mode))
        finally:
            self._thread.close()

    def __enter__(self) -> ShardedQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _build(shards: Sequence[Any], options: dict[str, Any]) -> AsyncShardedQueue:
    return AsyncShardedQueue(shards, **options)  # on the loop its pools will run on
