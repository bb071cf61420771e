"""What the blocking and the async queue share: kinds, statements, state; no I/O."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pgqueue.audit import AuditEntry, current_actor
from pgqueue.envelope import Stamp
from pgqueue.errors import InvalidOptions, InvalidTask, QueueClosed
from pgqueue.events import EventBus, Listener, TasksPushed
from pgqueue.options import KindOptions, to_seconds
from pgqueue.periodic import Periodic, make_schedule
from pgqueue.registry import Handler, KindRegistry
from pgqueue.runtime.wakeups import PushWakeups
from pgqueue.store import operations
from pgqueue.store.executor import Operation, Steps
from pgqueue.store.operations import LimitOverrides
from pgqueue.store.queries import DEFAULT_SCHEMA, Queries
from pgqueue.task import (
    KindInfo,
    Status,
    Task,
    TaskInfo,
    ThroughputPoint,
    encode_payload,
    validate_kind_name,
)
from pgqueue.workflow import Workflow


class QueueState(enum.StrEnum):
    """Where a queue is in its life: ``init`` → ``running`` → ``stopping`` → ``stopped``
    (startable again) → ``closed``."""

    INIT = "init"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CLOSED = "closed"


Delay = float | int | timedelta


class QueueBase:
    """Registration, validation and operation building for both facades."""

    def __init__(self, *, schema: str = DEFAULT_SCHEMA, stamps: Sequence[Stamp] = ()) -> None:
        self.queries = Queries(schema)
        self.registry = KindRegistry()
        self._wakeups = PushWakeups()  # concurrent pushes of a kind share a wake-up
        self.stamps = list(stamps)
        for stamp in self.stamps:
            if not callable(stamp):
                raise InvalidOptions(f"stamps must be callables, got {stamp!r}")
        self._state = QueueState.INIT
        self.events = EventBus()
        self.periodics: list[Periodic] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every runtime event (claims, attempts, writes); returns an
        unsubscribe function. Listeners run on the runtime's loop and must be quick."""
        return self.events.subscribe(listener)

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this queue's tables."""
        return self.queries.schema

    @property
    def state(self) -> QueueState:
        """The queue's :class:`QueueState`."""
        return self._state

    def register_kind(self, kind: str, handler: Handler, options: KindOptions) -> None:
        """Register ``handler`` for ``kind``; workers for it start with :meth:`start`.

        ``handler`` is called with one argument, the :class:`~pgqueue.Envelope` (``def`` or
        ``async def``). A handler or hook that cannot be called with its arguments (the
        envelope; for ``failure`` the envelope and the error) raises
        :class:`~pgqueue.errors.InvalidOptions` here, not at every attempt.
        """
        self._check_open()
        if self._state in (QueueState.RUNNING, QueueState.STOPPING):
            raise InvalidOptions("register kinds before start() (or after stop())")
        if handler is None or not callable(handler):
            raise InvalidOptions(f"handler of kind {kind!r} must be callable")
        self.registry.add(kind, options, handler)

    def declare_kind(self, kind: str, options: KindOptions) -> None:
        """Declare ``kind`` so this process may push it without handling it."""
        self._check_open()
        self.registry.add(kind, options, None)

    def add_periodic(
        self,
        kind: str,
        *,
        every: float | int | timedelta | None = None,
        cron: str | None = None,
        payload: Any = None,
        tz: str = "UTC",
    ) -> None:
        """Enqueue a task of ``kind`` every ``every`` seconds or on a ``cron`` expression.

        Each slot's task has the external key ``periodic:<slot start, UTC ISO>``; any number of
        running processes create exactly one task per slot. The kind's attempt timeout must not
        exceed the interval (for cron, the shortest gap between slots).
        """
        self._add_periodic(kind, every=every, cron=cron, payload=payload, tz=tz)

    def _add_periodic(
        self,
        kind: str,
        *,
        every: float | int | timedelta | None,
        cron: str | None,
        payload: Any,
        tz: str,
        owns: Callable[[datetime], bool] | None = None,
    ) -> None:
        """``add_periodic``; ``owns`` (a sharded queue's) picks the slots this queue creates."""
        self._check_open()
        if self._state in (QueueState.RUNNING, QueueState.STOPPING):
            raise InvalidOptions("add periodic schedules before start() (or after stop())")
        spec = self.registry.get(kind)
        if spec.handler is None:
            raise InvalidOptions(f"periodic kind {kind!r} must be registered with a handler")
        encode_payload(payload)
        schedule = make_schedule(every, cron, tz)
        timeout = spec.options.attempt_timeout_seconds
        gap = schedule.shortest_gap()
        if timeout > gap:
            raise InvalidOptions(
                f"attempt_timeout of periodic kind {kind!r} ({timeout:g}s) exceeds its "
                f"interval ({gap:g}s)"
            )
        if any(p.kind == kind for p in self.periodics):
            raise InvalidOptions(f"kind {kind!r} already has a periodic schedule")
        self.periodics.append(Periodic(kind, schedule, payload, owns))

    def longest_attempt_timeout(self) -> float:
        """The longest ``attempt_timeout`` among the kinds (what a drain may wait for)."""
        return max(
            (to_seconds(s.options.attempt_timeout, "attempt_timeout") for s in self.registry),
            default=0.0,
        )

    def _check_open(self) -> None:
        if self._state is QueueState.CLOSED:
            raise QueueClosed("the queue is closed")

    def _report_pushed(self, tasks: Sequence[Task], ids: Sequence[int | None]) -> None:
        """Tell listeners (metrics) how many tasks of each kind were inserted."""
        counts: dict[str, int] = {}
        for task, task_id in zip(tasks, ids, strict=False):
            if task_id is not None:
                counts[task.kind] = counts.get(task.kind, 0) + 1
        if counts:
            self.events.emit(TasksPushed(tuple(sorted(counts.items()))))

    def _push_op(self, tasks: Sequence[Task], delay: Delay) -> Operation[list[int | None]]:
        self._check_open()
        return operations.push_tasks(self.registry, self.queries, tasks, delay)

    def _push_one_op(
        self, task: Task, delay: Delay, notify: bool = True
    ) -> Operation[list[int | None]]:
        if not isinstance(task, Task):
            raise InvalidTask(f"expected a Task, got {type(task).__name__}")
        self._check_open()
        return operations.push_tasks(self.registry, self.queries, [task], delay, notify)

    def _quiet_push_kind(self, task: Task, delay: Delay) -> str | None:
        """The kind whose wake-up this push may share (a task due now), else None."""
        if isinstance(task, Task) and (delay == 0 or delay == timedelta(0)):
            return task.kind
        return None

    def _push_workflow_op(self, workflow: Workflow) -> Operation[operations.WorkflowIds]:
        self._check_open()
        return operations.push_workflow(self.registry, self.queries, workflow)

    def _report_workflow(self, workflow: Workflow) -> None:
        if self.events.listeners:
            nodes = workflow.nodes
            self._report_pushed([n.task for n in nodes], [1] * len(nodes))

    def _cancel_op(self, kind: str, external_key: str) -> Operation[bool]:
        self._check_open()
        op = operations.cancel_task_by_key(self.registry, self.queries, kind, external_key)
        action = operations.Action("cancel_task", kind, detail={"external_key": external_key})
        return operations.audited(self.queries, op, action)

    def _retry_op(self, kind: str, attempts: int, limit: int) -> Operation[int]:
        self._check_open()
        op = operations.retry_tasks(self.registry, self.queries, kind, attempts, limit)
        detail = {"attempts": attempts, "limit": limit}
        return operations.audited(
            self.queries, op, operations.Action("retry_kind", kind, detail=detail), int
        )

    def _workflow_op(self, workflow_id: str) -> Operation[list[operations.WorkflowNode]]:
        self._check_open()
        return operations.get_workflow(self.queries, workflow_id)

    def _nodes_op(self, ids: Sequence[int]) -> Operation[dict[int, tuple[str, str, str]]]:
        self._check_open()
        return operations.get_nodes(self.queries, ids)

    def _get_op(self, task_id: int, replica_ok: bool = False) -> Operation[TaskInfo | None]:
        self._check_open()
        return operations.get_task(self.queries, task_id, replica_ok=replica_ok)

    def _table_health_op(self) -> Operation[operations.TableHealth]:
        self._check_open()
        return operations.read_table_health(self.queries)

    def _count_op(self) -> Operation[dict[tuple[str, str], int]]:
        self._check_open()
        return operations.count_tasks_by_status(self.queries)

    def _cancel_id_op(self, task_id: int) -> Operation[bool]:
        self._check_open()
        op = operations.cancel_task(self.queries, task_id)
        return operations.audited(self.queries, op, operations.Action("cancel_task", None, task_id))

    def _retry_id_op(self, task_id: int, attempts: int) -> Operation[bool]:
        self._check_open()
        op = operations.retry_task(self.queries, task_id, attempts)
        action = operations.Action("retry_task", None, task_id, {"attempts": attempts})
        return operations.audited(self.queries, op, action)

    def _list_tasks_op(
        self,
        kind: str | None,
        status: str | Status | None,
        key_prefix: str | None,
        payload_contains: Any,
        before_id: int | None,
        limit: int,
    ) -> Operation[list[TaskInfo]]:
        self._check_open()
        return operations.list_tasks(
            self.queries,
            kind=kind,
            status=status,
            key_prefix=key_prefix,
            payload_contains=payload_contains,
            before_id=before_id,
            limit=limit,
        )

    def _pause_op(self, kind: str, pause: bool) -> Operation[None]:
        self._check_open()
        build = operations.pause_kind if pause else operations.resume_kind
        op = build(self.queries, kind, kind in self.registry)
        action = operations.Action("pause_kind" if pause else "resume_kind", kind)
        return operations.audited(self.queries, op, action, lambda _: 1)

    def _set_limits_op(self, kind: str, changes: dict[str, Any]) -> Operation[LimitOverrides]:
        self._check_open()
        op = operations.set_kind_limits(self.queries, kind, kind in self.registry, **changes)
        actor = current_actor()  # the audit log's entry names the overrides now in force
        return operations.audited_entries(
            self.queries,
            op,
            lambda now: [(actor, operations.Action("set_limits", kind, detail=now.as_dict()), 1)],
        )

    def _limits_op(self, kind: str) -> Operation[LimitOverrides]:
        self._check_open()
        validate_kind_name(kind)
        read = operations.read_kind_limits(self.queries, [kind])

        def steps() -> Steps[LimitOverrides]:
            found = yield from read.steps
            return found.get(kind) or LimitOverrides()

        return Operation(steps(), readonly=True)

    def _list_kinds_op(self) -> Operation[list[KindInfo]]:
        self._check_open()
        return operations.list_kinds(self.registry, self.queries)

    def _audit_op(
        self,
        limit: int,
        before_id: int | None,
        kind: str | None,
        source: str | None,
        action: str | None,
    ) -> Operation[list[AuditEntry]]:
        self._check_open()
        return operations.list_audit_entries(
            self.queries, limit=limit, before_id=before_id, kind=kind, source=source, action=action
        )

    def _throughput_op(self, kind: str | None, minutes: int) -> Operation[list[ThroughputPoint]]:
        self._check_open()
        return operations.read_throughput(self.queries, kind, minutes)
