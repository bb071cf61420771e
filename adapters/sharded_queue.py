"""The awaitable sharded queue: one ordinary ``AsyncQueue`` per shard, pushes routed by slot,
a workflow pushed whole to one shard, admin calls fanned out and merged (:mod:`.shards` has
the design and the blocking twin)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from pgqueue.async_queue import AsyncQueue
from pgqueue.base import Delay, QueueState
from pgqueue.envelope import Stamp
from pgqueue.errors import InvalidTask
from pgqueue.events import Listener
from pgqueue.options import KindOptions
from pgqueue.periodic import periodic_key
from pgqueue.registry import Handler
from pgqueue.runtime import StopMode
from pgqueue.store.executor import Operation, Statement, single
from pgqueue.store.operations import LimitOverrides, WorkflowIds, WorkflowNode, check_workflow_id
from pgqueue.store.queries import DEFAULT_SCHEMA
from pgqueue.task import Task, TaskInfo
from pgqueue.workflow import Workflow

from .shard_routing import (
    KEY_PAGE,
    Routing,
    ShardUnavailable,
    SlotMap,
    WrongShard,
    aligned,
    global_ids,
    global_node,
    global_task_id,
    global_workflow_ids,
    globalise,
    merge_counts,
    slot_of,
    split_task_id,
)
from .transactions import run_in_async

T = TypeVar("T")


class AsyncShardedQueue:
    """An awaitable queue over shards: DSNs (psycopg, failing fast when a shard is away) or
    async executors / pools, one per shard, in shard order."""

    def __init__(
        self,
        shards: Sequence[Any],
        *,
        slot_map: SlotMap | None = None,
        schema: str = DEFAULT_SCHEMA,
        stamps: Sequence[Stamp] = (),
        max_connections: int = 8,
        connect_timeout: float = 2.0,
        retry_after: float = 1.0,
    ) -> None:
        from .failfast import AsyncFailFastExecutor

        if isinstance(shards, (str, bytes)):
            raise TypeError("shards must be a sequence of DSNs or executors, one per shard")
        self.routing = Routing(len(shards), slot_map, retry_after)
        self.shards = [
            AsyncQueue(
                AsyncFailFastExecutor(t, max_size=max_connections, connect_timeout=connect_timeout)
                if isinstance(t, str)
                else t,
                schema=schema,
                stamps=stamps,
                max_connections=max_connections,
            )
            for t in shards
        ]

    @property
    def state(self) -> QueueState:
        return self.shards[0].state

    def shard_for(self, kind: str, external_key: str) -> int:
        """The shard (index into the given shards) a task with this key is pushed to."""
        return self.routing.shard_for(kind, external_key)

    def register_kind(self, kind: str, handler: Handler, options: KindOptions) -> None:
        for queue in self.shards:
            queue.register_kind(kind, handler, options)

    def declare_kind(self, kind: str, options: KindOptions) -> None:
        for queue in self.shards:
            queue.declare_kind(kind, options)

    def add_periodic(
        self,
        kind: str,
        *,
        every: float | int | timedelta | None = None,
        cron: str | None = None,
        payload: Any = None,
        tz: str = "UTC",
    ) -> None:
        """A periodic schedule over the fleet: every shard runs the scheduler, and each slot's
        task is created only by the shard its key (``periodic:<slot>``) routes to, so the
        fleet holds one task per slot, where a push of that key would land. While that
        shard is down its slots wait for it (the latest one is created when it is back)."""
        for shard, queue in enumerate(self.shards):
            queue._add_periodic(
                kind, every=every, cron=cron, payload=payload, tz=tz, owns=self._owner(kind, shard)
            )

    def _owner(self, kind: str, shard: int) -> Callable[[datetime], bool]:
        def owns(slot: datetime) -> bool:
            return self.routing.shard_for(kind, periodic_key(slot)) == shard

        return owns

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """``listener`` gets the events of every shard (ids in them are shard-local)."""
        cancels = [queue.subscribe(listener) for queue in self.shards]

        def unsubscribe() -> None:
            for cancel in cancels:
                cancel()

        return unsubscribe

    async def _on(self, shard: int, call: Awaitable[T], *, push: bool = False) -> T:
        """Await ``call`` on ``shard``, turning connection failures into ShardUnavailable.
        A push to a shard that failed in the last ``retry_after`` seconds fails at once; admin
        calls always try (they are rare, and should see a shard as soon as it is back)."""
        if push:
            try:
                self.routing.check_up(shard)
            except ShardUnavailable:
                if isinstance(call, Coroutine):
                    call.close()
                raise
        try:
            result = await call
            self.routing.down_until[shard] = 0.0
            return result
        except Exception as exc:
            raised = self.routing.failed(shard, exc)
            if raised is exc:
                raise
            raise raised from exc

    def _report(self, shard: int, tasks: Sequence[Task], local_ids: Sequence[int | None]) -> None:
        """Tell the listeners (metrics) what a push inserted, through the shard's queue, as an
        unsharded push does."""
        queue = self.shards[shard]
        if queue.events.listeners:
            queue._report_pushed(tasks, local_ids)

    async def push_task(self, task: Task, delay: Delay = 0) -> int | None:
        """Push one task to its shard; its global id, or ``None`` when its key exists."""
        shard = self.routing.shard_of(task)
        queue = self.shards[shard]
        op = queue._push_one_op(task, delay)
        [local] = await self._on(shard, queue.executor.run(op), push=True)
        self._report(shard, (task,), [local])
        return None if local is None else global_task_id(shard, local)

    async def push_tasks(self, tasks: Sequence[Task], delay: Delay = 0) -> list[int | None]:
        """Push many tasks: one statement per shard, run concurrently; global ids aligned with
        ``tasks``. Each shard's part commits on its own (there is no transaction across
        shards): on an error, parts on other shards may have been pushed."""
        groups = self.routing.split(tasks)
        ops = {
            shard: self.shards[shard]._push_op([tasks[p] for p in positions], delay)
            for shard, positions in groups.items()
        }
        done = await asyncio.gather(
            *(self._on(s, self.shards[s].executor.run(op), push=True) for s, op in ops.items()),
            return_exceptions=True,
        )
        results: dict[int, list[int | None]] = {}
        failure: BaseException | None = None
        for shard, outcome in zip(ops, done, strict=True):
            if isinstance(outcome, BaseException):
                failure = failure or outcome
                continue
            results[shard] = outcome
            self._report(shard, [tasks[p] for p in groups[shard]], outcome)  # it committed
        if failure is not None:
            raise failure
        return aligned(len(tasks), groups, results)

    async def _learn_identities(self, shards: Sequence[int], *, tolerant: bool) -> None:
        """Ask shards which server and database they are (once per shard)."""
        for shard in [s for s in shards if s not in self.routing.identities]:
            queue = self.shards[shard]
            statement = Statement(queue.queries["server_identity"], {})
            try:
                rows = await self._on(shard, queue.executor.run(single(statement)))
            except ShardUnavailable:
                if tolerant:
                    continue  # a transaction cannot be on a shard that is down
                raise
            self.routing.identities[shard] = rows[0][0]

    async def _checked_push(
        self, tasks: Sequence[Task], delay: Delay
    ) -> tuple[AsyncQueue, Operation[tuple[int, list[int | None]]]]:
        """The queue whose executor runs it and the push preceded by its shard check."""
        keyed = {self.routing.shard_of(t) for t in tasks if t.external_key is not None}
        if len(keyed) > 1:
            raise WrongShard(f"these tasks belong to shards {sorted(keyed)}; push them apart")
        expected = next(iter(keyed), None)
        if expected is None:
            await self._learn_identities(range(len(self.shards)), tolerant=True)
        else:
            await self._learn_identities([expected], tolerant=False)
        queue = self.shards[expected if expected is not None else 0]
        op = self.routing.checked_push(
            expected, queue._push_op(tasks, delay), queue.queries["server_identity"]
        )
        return queue, op

    async def push_tasks_tx(
        self, tx: Any, tasks: Sequence[Task], delay: Delay = 0
    ) -> list[int | None]:
        """Push in the caller's open transaction, which must be on the tasks' shard (they must
        share one; keyless tasks go to the transaction's shard). Raises :class:`WrongShard`
        before writing anything otherwise."""
        _queue, op = await self._checked_push(tasks, delay)
        shard, local_ids = await run_in_async(tx, op)
        self._report(shard, tasks, local_ids)
        return global_ids(shard, local_ids)

    async def push_task_tx(self, tx: Any, task: Task, delay: Delay = 0) -> int | None:
        """Push one task in the caller's transaction (on ``shard_for(kind, key)``)."""
        if not isinstance(task, Task):
            raise InvalidTask(f"expected a Task, got {type(task).__name__}")
        return (await self.push_tasks_tx(tx, [task], delay))[0]

    async def push_workflow(self, workflow: Workflow) -> WorkflowIds:
        """Push every node of ``workflow`` to one shard, in one transaction there (a node's
        release is decided in its parents' database). Nodes carry no key, so the workflow is
        placed as one keyless task is: on the shard of the next slot in turn. Returns the
        nodes' global ids by name and the ``workflow_id``."""
        shard = self.routing.keyless_shard()
        queue = self.shards[shard]
        op = queue._push_workflow_op(workflow)  # checks the workflow before any SQL
        local = await self._on(shard, queue.executor.run(op), push=True)
        queue._report_workflow(workflow)
        return global_workflow_ids(shard, local)

    async def _checked_workflow(self, workflow: Workflow) -> Operation[tuple[int, WorkflowIds]]:
        """The workflow's push preceded by the check that finds the transaction's shard."""
        queue = self.shards[0]  # the statements are the same on every shard
        op = queue._push_workflow_op(workflow)  # checks the workflow before any SQL
        await self._learn_identities(range(len(self.shards)), tolerant=True)
        return self.routing.checked_push(None, op, queue.queries["server_identity"])

    async def push_workflow_tx(self, tx: Any, workflow: Workflow) -> WorkflowIds:
        """Push every node of ``workflow`` in the caller's open transaction: as keyless tasks
        do, the workflow goes to the shard the transaction is on (open it on the shard you
        want). Raises :class:`WrongShard` before writing anything when the transaction is on
        no shard of this queue; never commits or rolls back."""
        op = await self._checked_workflow(workflow)
        shard, local = await run_in_async(tx, op)
        self.shards[shard]._report_workflow(workflow)
        return global_workflow_ids(shard, local)

    async def get_workflow(self, workflow_id: str) -> list[WorkflowNode]:
        """The nodes of a workflow in push order, with global ids (empty for an unknown id).
        Every shard is asked at once (one probe of its workflow index); a shard that is down
        only fails the call when no other shard holds the workflow."""
        canonical = check_workflow_id(workflow_id)
        found = await asyncio.gather(
            *(self._on(s, q.get_workflow(canonical)) for s, q in enumerate(self.shards)),
            return_exceptions=True,
        )
        failure: BaseException | None = None
        for shard, outcome in enumerate(found):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                failure = failure or outcome
            elif outcome:
                return [global_node(shard, node) for node in outcome]
        if failure is not None:
            raise failure
        return []

    async def get_nodes(self, task_ids: Sequence[int]) -> dict[int, tuple[str, str, str]]:
        """``(kind, node name, status)`` of workflow tasks by global id, each read on its
        shard."""
        by_shard: dict[int, list[int]] = {}
        for task_id in task_ids:
            shard, local = split_task_id(task_id)
            if shard < len(self.shards):
                by_shard.setdefault(shard, []).append(local)
        parts = await asyncio.gather(
            *(self._on(s, self.shards[s].get_nodes(ids)) for s, ids in by_shard.items())
        )
        return {
            global_task_id(shard, local): node
            for shard, part in zip(by_shard, parts, strict=True)
            for local, node in part.items()
        }

    async def cancel_task_by_key(self, kind: str, external_key: str) -> bool:
        shard = self.routing.shard_for(kind, external_key)
        return await self._on(shard, self.shards[shard].cancel_task_by_key(kind, external_key))

    async def _fan_out(self, call: Callable[[AsyncQueue], Awaitable[T]]) -> list[T]:
        return list(
            await asyncio.gather(*(self._on(s, call(q)) for s, q in enumerate(self.shards)))
        )

    async def retry_tasks(self, kind: str, attempts: int = 1, limit: int = 1000) -> int:
        """Revive up to ``limit`` exhausted tasks in the whole fleet, shard after shard (oldest
        first within a shard); the total revived."""
        revived = 0
        for shard, queue in enumerate(self.shards):
            if revived >= limit:
                break
            revived += await self._on(shard, queue.retry_tasks(kind, attempts, limit - revived))
        return revived

    async def set_limits(self, kind: str, **changes: Any) -> list[LimitOverrides]:
        """Override ``kind``'s limits on every shard (same arguments as
        :meth:`AsyncQueue.set_limits`). Limits hold per shard: each shard's database decides
        its own claims, so a fleet-wide cap is the per-shard value times the shards (see
        ``RateLimit.divided``). Returns each shard's overrides."""
        return await self._fan_out(lambda q: q.set_limits(kind, **changes))

    async def clear_limits(self, kind: str, *, actor: str | None = None) -> list[LimitOverrides]:
        """Drop every override of ``kind``'s limits on every shard."""
        return await self._fan_out(lambda q: q.clear_limits(kind, actor=actor))

    async def get_limits(self, kind: str) -> list[LimitOverrides]:
        """Each shard's overrides of ``kind``'s limits."""
        return await self._fan_out(lambda q: q.get_limits(kind))

    async def count_tasks(self) -> dict[tuple[str, str], int]:
        """Tasks per ``(kind, status)`` over every shard."""
        return merge_counts(await self._fan_out(lambda q: q.count_tasks()))

    async def count_keys_in_slots(self, slots: Sequence[int]) -> dict[int, int]:
        """Keyed tasks (any status) per shard whose slot is in ``slots``: when adding a shard,
        wait until this is zero for ``old_map.moved(new_map)`` before switching maps (see
        docs/scaling.md). Reads every keyed row once, a page at a time."""
        wanted = set(slots)

        async def count(shard: int, queue: AsyncQueue) -> int:
            found, after = 0, 0
            sql = queue.queries["list_keyed_tasks"]
            while True:
                page = await self._on(
                    shard,
                    queue.executor.run(single(Statement(sql, {"after": after, "limit": KEY_PAGE}))),
                )
                found += sum(1 for _, kind, key in page if slot_of(kind, key) in wanted)
                if len(page) < KEY_PAGE:
                    return found
                after = page[-1][0]

        counts = await asyncio.gather(*(count(s, q) for s, q in enumerate(self.shards)))
        return dict(enumerate(counts))

    async def get_task(self, task_id: int, *, replica_ok: bool = False) -> TaskInfo | None:
        shard, local = split_task_id(task_id)
        if shard >= len(self.shards):
            return None
        info = await self._on(shard, self.shards[shard].get_task(local, replica_ok=replica_ok))
        return globalise(shard, info)

    async def start(self) -> None:
        """Start every shard's workers (a shard that is down is retried by its own loops)."""
        await asyncio.gather(*(q.start() for q in self.shards))

    async def stop(self, mode: StopMode = StopMode.DRAIN) -> None:
        await asyncio.gather(*(q.stop(mode) for q in self.shards))

    async def wait_listening(self) -> None:
        await asyncio.gather(*(q.wait_listening() for q in self.shards))

    async def close(self, mode: StopMode = StopMode.DRAIN) -> None:
        await asyncio.gather(*(q.close(mode) for q in self.shards))

    async def __aenter__(self) -> AsyncShardedQueue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
