"""``Queue``: the blocking facade, for sync applications (Flask, Django, scripts).

Pushes and admin calls run on the caller's thread over a blocking connection pool. The worker
runtime is the same asyncio runtime ``AsyncQueue`` uses, hosted on a background thread; sync
handlers run on its bounded thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, cast

from pgqueue.aio import wait_event
from pgqueue.audit import AuditEntry
from pgqueue.base import Delay, QueueBase, QueueState
from pgqueue.envelope import Stamp
from pgqueue.limits import RateLimit
from pgqueue.options import KindOptions
from pgqueue.runtime import Runtime, StopMode
from pgqueue.runtime.waiters import TaskWaiters
from pgqueue.store import operations
from pgqueue.store.executor import SyncExecutor
from pgqueue.store.operations import (
    UNCHANGED,
    LimitOverrides,
    TableHealth,
    WorkflowIds,
    WorkflowNode,
)
from pgqueue.store.queries import DEFAULT_SCHEMA
from pgqueue.store.schema_version import check_schema
from pgqueue.task import KindInfo, Status, Task, TaskInfo, ThroughputPoint
from pgqueue.typed import QueueTaskDecorator
from pgqueue.workflow import Workflow

T = TypeVar("T")

log = logging.getLogger("pgqueue.push")


class _LoopThread:
    """An event loop running forever on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="pgqueue-runtime", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def sync_executor_for(target: Any, max_size: int) -> tuple[SyncExecutor, str]:
    """A blocking executor and the conninfo the worker runtime connects with."""
    from pgqueue.adapters.psycopg import PsycopgExecutor

    if isinstance(target, str):
        return PsycopgExecutor(target, max_size=max_size), target
    type_name = f"{type(target).__module__}.{type(target).__qualname__}"
    if type_name.startswith("psycopg_pool"):
        return PsycopgExecutor(target), target.conninfo
    if type_name.startswith("sqlalchemy"):
        from pgqueue.adapters.sqlalchemy import SqlAlchemyExecutor

        return SqlAlchemyExecutor(target), ""
    if all(hasattr(target, name) for name in ("run", "close", "async_twin")):
        return cast(SyncExecutor, target), ""  # a ready executor that brings its workers' twin
    raise TypeError(
        "Queue needs a DSN, a psycopg ConnectionPool, a SQLAlchemy Engine or an executor with "
        f"an async_twin, got {type_name}"
    )


class Queue(QueueBase):
    """A durable task queue on PostgreSQL, with a blocking API (same names as ``AsyncQueue``)."""

    def __init__(
        self,
        target: Any,
        *,
        schema: str = DEFAULT_SCHEMA,
        stamps: Sequence[Stamp] = (),
        max_connections: int = 8,
        listen_dsn: str | None = None,
    ) -> None:
        """``target``: a DSN, a psycopg ``ConnectionPool``, a SQLAlchemy ``Engine`` or an
        executor. ``listen_dsn``: a DSN straight to PostgreSQL for the workers' one LISTEN
        connection, when ``target`` goes through PgBouncer in transaction pooling mode (where
        LISTEN does not work)."""
        super().__init__(schema=schema, stamps=stamps)
        self.executor, self._conninfo = sync_executor_for(target, max_connections)
        if listen_dsn is not None and not self._conninfo:
            raise TypeError(
                "listen_dsn goes with a DSN or a psycopg ConnectionPool; with a SQLAlchemy engine "
                "or an executor, give the LISTEN DSN to the async executor its workers use"
            )
        self._listen_dsn = listen_dsn
        self._max_connections = max_connections
        self._loop_thread: _LoopThread | None = None
        self._runtime: Runtime | None = None
        self._runtime_executor: Any = None
        self._waiters: TaskWaiters | None = None
        self._lock = threading.Lock()

    def task(self, kind: str, options: KindOptions) -> QueueTaskDecorator:
        """Register the decorated function as the handler of ``kind``; push it with its arguments.

        ``@queue.task("send-email", KindOptions(attempt_timeout=30))`` on
        ``def send_email(user_id: int) -> None`` gives an object whose ``push(user_id=42)``
        (``push_tx(conn, ...)``, ``configure(key=, delay=, priority=, group=).push(...)``) pushes
        a task whose payload holds the arguments by name; the worker calls the function with
        them. Arguments are checked against the signature and simple annotations at push time
        (:class:`~pgqueue.errors.InvalidTask`); dataclass and pydantic-model arguments are
        rebuilt from their annotations. A parameter annotated :class:`~pgqueue.Envelope`
        receives the attempt's envelope. Calling the object runs the function inline.
        """
        return QueueTaskDecorator(self, kind, options)

    def push_task(self, task: Task, delay: Delay = 0) -> int | None:
        """Push one task; its id, or ``None`` when its ``(kind, external_key)`` exists."""
        kind = self._quiet_push_kind(task, delay)
        if kind is None:
            ids = self.executor.run(self._push_one_op(task, delay))
        else:
            wakeups = self._wakeups
            notify = wakeups.begin(kind)
            try:
                ids = self.executor.run(self._push_one_op(task, delay, notify))
            except BaseException:
                wakeups.end(kind, notify, committed=False)
                raise
            if wakeups.end(kind, notify, committed=True):
                try:
                    while wakeups.owed(kind):
                        self.executor.run(operations.notify_kinds(self.queries, [kind]))
                except BaseException as exc:  # the push is done: a lost wake-up costs latency
                    wakeups.abandon(kind)
                    if not isinstance(exc, Exception):
                        raise
                    log.warning("waking the workers of %r after pushes failed: %s", kind, exc)
        if self.events.listeners:
            self._report_pushed((task,), ids)
        return ids[0]

    def push_task_tx(self, tx: Any, task: Task, delay: Delay = 0) -> int | None:
        """Push one task in the caller's open transaction (never commits or rolls back)."""
        from pgqueue.adapters.transactions import run_in_sync  # the drivers load on first use

        ids: list[int | None] = run_in_sync(tx, self._push_one_op(task, delay))
        if self.events.listeners:
            self._report_pushed((task,), ids)
        return ids[0]

    def push_tasks(self, tasks: Sequence[Task], delay: Delay = 0) -> list[int | None]:
        """Push many tasks in one statement; ids aligned with ``tasks``."""
        ids = self.executor.run(self._push_op(tasks, delay))
        if self.events.listeners:
            self._report_pushed(tasks, ids)
        return ids

    def push_tasks_tx(self, tx: Any, tasks: Sequence[Task], delay: Delay = 0) -> list[int | None]:
        """Push many tasks in the caller's open transaction."""
        from pgqueue.adapters.transactions import run_in_sync  # the drivers load on first use

        ids: list[int | None] = run_in_sync(tx, self._push_op(tasks, delay))
        if self.events.listeners:
            self._report_pushed(tasks, ids)
        return ids

    def push_workflow(self, workflow: Workflow) -> WorkflowIds:
        """Push every node of ``workflow`` in one transaction: the nodes without parents are
        due now, the others wait for their parents. Returns the ids by node name (and the
        workflow's id as ``workflow_id``)."""
        ids = self.executor.run(self._push_workflow_op(workflow))
        self._report_workflow(workflow)
        return ids

    def push_workflow_tx(self, tx: Any, workflow: Workflow) -> WorkflowIds:
        """Push every node of ``workflow`` in the caller's open transaction (never commits or
        rolls back): the nodes exist if and only if that transaction commits."""
        from pgqueue.adapters.transactions import run_in_sync  # the drivers load on first use

        ids: WorkflowIds = run_in_sync(tx, self._push_workflow_op(workflow))
        self._report_workflow(workflow)
        return ids

    def cancel_task_by_key(self, kind: str, external_key: str) -> bool:
        """Cancel the waiting or running task with this key; True when one was cancelled."""
        return self.executor.run(self._cancel_op(kind, external_key))

    def retry_tasks(self, kind: str, attempts: int = 1, limit: int = 1000) -> int:
        """Give up to ``limit`` exhausted tasks fresh ``attempts``; the number revived."""
        return self.executor.run(self._retry_op(kind, attempts, limit))

    def cancel_task(self, task_id: int) -> bool:
        """Cancel the waiting or running task with this id; True when one was cancelled."""
        return self.executor.run(self._cancel_id_op(task_id))

    def retry_task(self, task_id: int, attempts: int = 1) -> bool:
        """Make the task with this id due now, unless it is running.

        A task that ended (``no_attempts_left``, ``cancelled`` or ``succeeded``) becomes
        ``must_retry`` with ``attempts`` fresh attempts; a waiting one (``new``, ``must_retry``,
        delayed) keeps its attempts and is due at once. True when the task changed; False when
        there is no such task or it is running.
        """
        return self.executor.run(self._retry_id_op(task_id, attempts))

    def get_workflow(self, workflow_id: str) -> list[WorkflowNode]:
        """The nodes of a workflow (``push_workflow``'s ``workflow_id``) in push order, with
        their status, parents and children; empty for an unknown id."""
        return self.executor.run(self._workflow_op(workflow_id))

    def get_nodes(self, task_ids: Sequence[int]) -> dict[int, tuple[str, str, str]]:
        """``(kind, node name, status)`` of workflow tasks by id (a task's parents and
        children, as ``TaskInfo.parents`` and ``children`` list them)."""
        return self.executor.run(self._nodes_op(task_ids))

    def get_task(self, task_id: int, *, replica_ok: bool = False) -> TaskInfo | None:
        """One task by id; ``replica_ok`` lets a primary/replica executor read a replica."""
        return self.executor.run(self._get_op(task_id, replica_ok))

    def list_tasks(
        self,
        *,
        kind: str | None = None,
        status: str | Status | None = None,
        key_prefix: str | None = None,
        payload_contains: Any = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[TaskInfo]:
        """A page of tasks, newest first; pass the last id as ``before_id`` for the next page.

        ``status`` is a stored status or ``processing``; ``payload_contains`` is a JSON value
        the payload must contain, searched among the 10,000 newest tasks matching the other
        filters (a bounded scan). Bad filters raise :class:`InvalidTask` before any SQL.
        """
        return self.executor.run(
            self._list_tasks_op(kind, status, key_prefix, payload_contains, before_id, limit)
        )

    def pause_kind(self, kind: str) -> None:
        """Pause ``kind`` in every process: no new attempt starts, running ones finish, pushes
        still work. Unknown kinds (neither here nor in the database) raise ``UnknownKind``."""
        self.executor.run(self._pause_op(kind, True))

    def resume_kind(self, kind: str) -> None:
        """Resume a paused kind in every process; its workers claim at once."""
        self.executor.run(self._pause_op(kind, False))

    def set_limits(
        self,
        kind: str,
        *,
        rate_limit: RateLimit | None = UNCHANGED,
        global_concurrency: int | None = UNCHANGED,
        group_concurrency: int | None = UNCHANGED,
        group_rate_limit: RateLimit | None = UNCHANGED,
        actor: str | None = None,
    ) -> LimitOverrides:
        """Override ``kind``'s limits in every process, until cleared: each worker obeys
        within a second, without a restart. ``None`` clears an override (back to the code's
        ``KindOptions``); an argument left out keeps its override. The change is recorded
        with ``actor`` in the audit trail. Returns the overrides now in force."""
        changes: dict[str, Any] = {"actor": actor}
        if rate_limit is not UNCHANGED:
            changes["rate_limit"] = rate_limit
        if global_concurrency is not UNCHANGED:
            changes["global_concurrency"] = global_concurrency
        if group_concurrency is not UNCHANGED:
            changes["group_concurrency"] = group_concurrency
        if group_rate_limit is not UNCHANGED:
            changes["group_rate_limit"] = group_rate_limit
        return self.executor.run(self._set_limits_op(kind, changes))

    def clear_limits(self, kind: str, *, actor: str | None = None) -> LimitOverrides:
        """Drop every override of ``kind``'s limits: the code's ``KindOptions`` apply again."""
        return self.set_limits(
            kind,
            rate_limit=None,
            global_concurrency=None,
            group_concurrency=None,
            group_rate_limit=None,
            actor=actor,
        )

    def get_limits(self, kind: str) -> LimitOverrides:
        """The operators' overrides of ``kind``'s limits (all ``None`` when there are none)."""
        return self.executor.run(self._limits_op(kind))

    def limit_changes(
        self, kind: str, limit: int = 20
    ) -> list[tuple[datetime, str | None, dict[str, Any]]]:
        """The audit trail of ``kind``'s limit overrides: (when, who, what changed), newest
        first."""
        self._check_open()
        return self.executor.run(operations.list_limit_changes(self.queries, kind, limit))

    def list_kinds(self) -> list[KindInfo]:
        """Every kind the database or this queue knows: pause state, counts per status, lag."""
        return self.executor.run(self._list_kinds_op())

    def audit_log(
        self,
        *,
        limit: int = 50,
        before_id: int | None = None,
        kind: str | None = None,
        source: str | None = None,
        action: str | None = None,
    ) -> list[AuditEntry]:
        """A page of the audit log of operator actions, newest first; pass the last id as
        ``before_id`` for the next page. Filters: ``kind``, ``source`` (``api``,
        ``dashboard``, ``cli``, ``python``), ``action``."""
        return self.executor.run(self._audit_op(limit, before_id, kind, source, action))

    def throughput(self, *, kind: str | None = None, minutes: int = 60) -> list[ThroughputPoint]:
        """Outcomes per kind and minute over the last ``minutes`` minutes, oldest first."""
        return self.executor.run(self._throughput_op(kind, minutes))

    def table_health(self) -> TableHealth:
        """The tasks table's dead rows, size and vacuum state; ``.problems`` says what keeps it
        from staying small (autovacuum off, vacuum falling behind), with what to do."""
        return self.executor.run(self._table_health_op())

    def count_tasks(self) -> dict[tuple[str, str], int]:
        """Number of tasks per ``(kind, status)``, ``processing`` derived."""
        return self.executor.run(self._count_op())

    def start(self) -> None:
        """Start the claim loops of every registered kind and the sweeper; idempotent.

        Raises :class:`~pgqueue.errors.DatabaseUnavailable` when the server cannot be reached
        and :class:`~pgqueue.errors.SchemaNotMigrated` when the schema needs ``pgqueue migrate``.
        """
        with self._lock:
            self._check_open()
            if self._state is QueueState.RUNNING:
                return
            if self._loop_thread is None:
                self._loop_thread = _LoopThread()
            self._runtime = self._loop_thread.call(self._start_runtime())
            self._state = QueueState.RUNNING

    def _async_executor(self) -> Any:
        """The executor of the workers and waiters, on the loop thread (built on first use)."""
        from pgqueue.adapters.psycopg import AsyncPsycopgExecutor

        if self._runtime_executor is None:
            twin = getattr(self.executor, "async_twin", None)
            self._runtime_executor = (
                twin(self._max_connections)
                if twin is not None
                else AsyncPsycopgExecutor(
                    self._conninfo, max_size=self._max_connections, listen_dsn=self._listen_dsn
                )
            )
        return self._runtime_executor

    def _loop(self) -> _LoopThread:
        with self._lock:
            self._check_open()
            if self._loop_thread is None:
                self._loop_thread = _LoopThread()
            return self._loop_thread

    async def _start_runtime(self) -> Runtime:
        await self._async_executor().run(check_schema(self.queries))
        runtime = Runtime(
            self.registry,
            self.queries,
            self._runtime_executor,
            self.stamps,
            self.events,
            self.periodics,
        )
        await runtime.start()
        return runtime

    def wait(self, task_id: int, timeout: float | None = None) -> TaskInfo:
        """Wait until the task with this id has ended and return it, with its ``result``.

        Ended means ``succeeded``, ``cancelled`` or ``no_attempts_left`` (not running); a task
        deleted as it ended (a retention of 0) still reports its outcome and result. One LISTEN
        connection serves every wait of the queue. Raises :class:`~pgqueue.errors.UnknownTask`
        at once when there is no such task, and :class:`~pgqueue.errors.WaitTimeout` (a
        ``TimeoutError``) when it has not ended within ``timeout`` seconds.
        """
        return self._loop().call(self._wait(task_id, timeout))

    async def _wait(self, task_id: int, timeout: float | None) -> TaskInfo:  # noqa: ASYNC109 - passed on
        if self._waiters is None:
            self._waiters = TaskWaiters(self._async_executor(), self.queries)
        return await self._waiters.wait(task_id, timeout)

    def stop(self, mode: StopMode = StopMode.DRAIN) -> None:
        """Stop claiming; drain in-flight attempts, or abort them and hand their tasks back.

        Called with ``ABORT`` while a drain is in progress (from another thread or task), it
        turns that drain into an abort, and returns once the queue stopped.
        """
        mode = StopMode(mode)
        with self._lock:
            runtime, loop_thread, state = self._runtime, self._loop_thread, self._state
            if runtime is None or loop_thread is None:
                return
            if state is QueueState.RUNNING:
                self._state = QueueState.STOPPING
        if state is QueueState.STOPPING:
            if mode is StopMode.ABORT:
                loop_thread.call(runtime.abort_inflight())
            loop_thread.call(runtime.stopped.wait())
            return
        if state is not QueueState.RUNNING:
            return
        try:
            loop_thread.call(runtime.stop(mode))
        finally:
            with self._lock:
                self._runtime = None
                if self._state is QueueState.STOPPING:
                    self._state = QueueState.STOPPED

    def wait_listening(self, timeout: float | None = None) -> None:
        """Wait until the running queue listens for push notifications (for tests and tools);
        ``TimeoutError`` after ``timeout`` seconds."""
        runtime, loop_thread = self._runtime, self._loop_thread
        if runtime is not None and loop_thread is not None:
            loop_thread.call(wait_event(runtime.listening, timeout))

    def close(self, mode: StopMode = StopMode.DRAIN) -> None:
        """Stop (drain by default) and release the connections; the queue is then unusable."""
        if self._state is QueueState.CLOSED:
            return
        self.stop(mode)
        with self._lock:
            if self._loop_thread is not None:
                if self._waiters is not None:
                    self._loop_thread.call(self._waiters.close())
                if self._runtime_executor is not None:
                    self._loop_thread.call(self._runtime_executor.close())
                self._loop_thread.close()
                self._loop_thread = None
            self.executor.close()
            self._state = QueueState.CLOSED

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
