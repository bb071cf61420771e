"""Pushing tasks: validation, JSON encoding and the insert statements (single, batch, capped)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pgqueue.bounds import MAX_SECONDS
from pgqueue.errors import CapacityExceeded, InvalidTask
from pgqueue.registry import KindRegistry, KindSpec
from pgqueue.store.executor import Operation, Statement, Steps
from pgqueue.store.queries import Queries
from pgqueue.task import (
    JSON_ENCODER,
    Task,
    encode_payload,
    validate_external_key,
    validate_group,
    validate_kind_name,
    validate_priority,
)
from pgqueue.tracing import current_trace_context

MAX_PAYLOAD_BYTES = 1_048_576


def delay_seconds(delay: float | int | timedelta) -> float:
    """Validate a push delay (0 to ten years, :data:`~pgqueue.options.MAX_SECONDS`) and return
    it in seconds."""
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
        seconds = float(delay)
    else:
        raise InvalidTask(f"delay must be seconds (int, float or timedelta), got {delay!r}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise InvalidTask(f"delay must be a finite number of seconds, got {delay!r}")
    if seconds < 0:
        raise InvalidTask(f"delay must not be negative, got {delay!r}")
    if seconds > MAX_SECONDS:
        raise InvalidTask(f"delay must be at most {MAX_SECONDS:.0f}s (10 years), got {delay!r}")
    return seconds


def push_tasks(
    registry: KindRegistry,
    queries: Queries,
    tasks: Sequence[Task],
    delay: float | int | timedelta = 0,
    notify: bool = True,
) -> Operation[list[int | None]]:
    """Validate ``tasks`` (raising before any SQL) and build the operation that inserts them.

    ``notify=False`` leaves out the wake-up of a single uncapped task (the caller sends it
    after the commit: see :mod:`pgqueue.runtime.wakeups`); batches always notify.

    The operation returns one id per task, ``None`` where the ``(kind, external_key)`` exists.
    Kinds with ``max_pending`` are locked and counted first, in one transaction, so the cap
    holds exactly across processes. A batch travels as one JSON document (one parameter):
    serialising it is one C-speed ``json.dumps`` instead of adapting every element.
    """
    if isinstance(tasks, Task):
        raise InvalidTask("push_tasks takes a sequence of Task; use push_task for one")
    seconds = delay_seconds(delay)
    trace = current_trace_context()  # None, at the cost of one test, without OpenTelemetry
    if len(tasks) == 1:
        single = _push_uncapped_one(registry, queries, tasks[0], seconds, trace, notify)
        if single is not None:
            return single
    rows: list[tuple[str, Any, str | None, int, int, str | None, str | None]] = []
    specs: dict[str, KindSpec] = {}
    for task in tasks:
        if not isinstance(task, Task):
            raise InvalidTask(f"expected a Task, got {type(task).__name__}")
        kind, key = task.kind, task.external_key
        spec = specs.get(kind)
        if spec is None:
            spec = specs[kind] = registry.get(validate_kind_name(kind))
        if key is not None:
            validate_external_key(key)
        priority, group = _priority_and_group(task, spec)
        rows.append((kind, task.payload, key, spec.options.max_attempts, priority, group, trace))
    document = _encode_batch(rows)
    capped_kinds = {kind for kind, spec in specs.items() if spec.options.max_pending is not None}
    capped = sorted(Counter(row[0] for row in rows if row[0] in capped_kinds).items())
    single_task = len(rows) == 1
    # A delayed push notifies its due time when a worker's poll would find it late: within the
    # longest poll period among the batch's kinds.
    notify_within = max(spec.options.loop.poll_period for spec in specs.values()) if specs else 0.0
    keyed = any(row[2] is not None for row in rows)
    # Keys of while_active kinds are unique among open tasks only: another statement.
    scoped = keyed and any(spec.options.key_scope == "while_active" for spec in specs.values())
    if scoped:
        document = (
            JSON_ENCODER.encode(
                [(*row, specs[row[0]].options.key_scope == "while_active") for row in rows]
            ),
            None,
        )

    def steps() -> Steps[list[int | None]]:
        if not rows:
            return []
        yield from check_capacity(registry, queries, capped)
        if single_task and not scoped:
            kind, _, key, max_attempts, priority, group, _ = rows[0]
            statement = _single_push(
                queries, kind, document[1], key, max_attempts, seconds, notify_within,
                priority, group, trace,
            )  # fmt: skip
            inserted = yield statement
            return [inserted[0][0] if inserted else None]
        name = "push_scoped_tasks" if scoped else "push_tasks" if keyed else "push_keyless_tasks"
        inserted = yield Statement(
            queries[name],
            {
                "tasks": document[0],
                "delay": seconds,
                "notify_within": notify_within,
                "channel": queries.channel,
            },
        )
        return [row[1] for row in inserted]

    return Operation(steps(), transactional=bool(capped))


@dataclass(frozen=True, slots=True)
class Pushed:
    """What a push wrote: one id per task (``None`` for a duplicate key) and the
    ``created_at`` and ``delayed_till`` the database gave the inserted rows (``None`` when
    nothing was inserted)."""

    ids: list[int | None]
    created_at: datetime | None
    delayed_till: datetime | None


def push_tasks_returning_times(
    registry: KindRegistry,
    queries: Queries,
    tasks: Sequence[Task],
    delay: float | int | timedelta = 0,
) -> Operation[Pushed]:
    """:func:`push_tasks`, also returning the timestamps the database stored (the insert
    statements return them: no second read). Every row of one push shares them, since
    ``now()`` is the transaction's time."""
    op = push_tasks(registry, queries, tasks, delay)

    def steps() -> Steps[Pushed]:
        inner = op.steps
        last: list[Any] = []
        try:
            statement = next(inner)
            while True:
                last = yield statement
                statement = inner.send(last)
        except StopIteration as done:
            ids: list[int | None] = done.value
        # The insert is the last statement; its first row carries (…, created_at, delayed_till).
        stamped = last[0] if last and ids and any(i is not None for i in ids) else None
        if stamped is None:
            return Pushed(ids, None, None)
        return Pushed(ids, stamped[-2], stamped[-1])

    return Operation(steps(), transactional=op.transactional)


def _single_push(
    queries: Queries,
    kind: str,
    payload: str | None,
    key: str | None,
    max_attempts: int,
    seconds: float,
    notify_within: float,
    priority: int,
    group: str | None,
    trace: str | None = None,
    notify: bool = True,
) -> Statement:
    """The statement that inserts one task: a plain INSERT unless it has a key to dedupe on."""
    return Statement(
        queries["push_task" if key is not None else "push_keyless_task"],
        {
            "kind": kind,
            "payload": payload,
            "external_key": key,
            "max_attempts": max_attempts,
            "delay": seconds,
            "notify_within": notify_within,
            "channel": queries.channel,
            "priority": priority,
            "task_group": group,
            "trace_context": trace,
            "notify": notify,
        },
    )


def check_capacity(
    registry: KindRegistry, queries: Queries, capped: Sequence[tuple[str, int]]
) -> Steps[None]:
    """For each ``(kind, requested)`` of a capped kind: lock its capacity until the transaction
    ends and raise ``CapacityExceeded`` if the new tasks would pass ``max_pending``."""
    for kind, requested in capped:
        cap = registry.get(kind).options.max_pending
        assert cap is not None
        yield Statement(queries["lock_kind_capacity"], {"lock_key": f"{queries.schema}:{kind}"})
        counted = yield Statement(queries["count_pending_tasks"], {"kind": kind})
        pending = int(counted[0][0])
        if pending + requested > cap:
            raise CapacityExceeded(kind, cap, pending, requested)


def _priority_and_group(task: Task, spec: KindSpec) -> tuple[int, str | None]:
    """The task's priority (the kind's default when it has none) and group, validated."""
    priority = task.priority
    if priority is None:
        priority = spec.options.priority
    else:
        validate_priority(priority)
    group = task.group
    if group is not None:
        validate_group(group)
    return priority, group


def _push_uncapped_one(
    registry: KindRegistry,
    queries: Queries,
    task: Task,
    seconds: float,
    trace: str | None,
    notify: bool = True,
) -> Operation[list[int | None]] | None:
    """The common single push, with less to build; None for a capped kind (counted first)."""
    if not isinstance(task, Task):
        raise InvalidTask(f"expected a Task, got {type(task).__name__}")
    kind, key = task.kind, task.external_key
    spec = registry.get(kind)  # registered kinds were validated; a miss is validated there
    if spec.options.max_pending is not None:
        return None
    if key is not None and spec.options.key_scope == "while_active":
        return None  # the batch path knows such keys
    if key is not None:
        validate_external_key(key)
    priority, group = _priority_and_group(task, spec)
    payload = _encode_checked(None, task.payload)
    statement = _single_push(
        queries,
        kind,
        payload,
        key,
        spec.options.max_attempts,
        seconds,
        float(spec.options.loop.poll_period),
        priority,
        group,
        trace,
        notify,
    )

    def steps() -> Steps[list[int | None]]:
        inserted = yield statement
        return [inserted[0][0] if inserted else None]

    return Operation(steps())


def _encode_batch(
    rows: list[tuple[str, Any, str | None, int, int, str | None, str | None]],
) -> tuple[str, str | None]:
    """JSON for a batch, or for one task its payload alone; validated either way.

    A batch is encoded at once; only when that fails or comes out large are payloads encoded
    one by one, to name the offending task.
    """
    if len(rows) == 1:
        return "", _encode_checked(None, rows[0][1])
    try:
        document = JSON_ENCODER.encode(rows)
    except (TypeError, ValueError, RecursionError):
        document = None
    if document is None or len(document) > MAX_PAYLOAD_BYTES or "\\u0000" in document:
        for index, row in enumerate(rows):
            _encode_checked(index, row[1])
        assert document is not None
    return document, None


def _encode_checked(index: int | None, payload: Any) -> str | None:
    """One task's payload as JSON, or an :class:`InvalidTask` naming the task's index in its
    batch (``index`` is ``None`` for a push of one task: there is nothing to point at)."""
    where = "" if index is None else f"task {index}: "
    try:
        encoded = encode_payload(payload)
    except InvalidTask as exc:
        raise InvalidTask(f"{where}{exc}") from exc.__cause__
    if encoded is not None and len(encoded) > MAX_PAYLOAD_BYTES:
        raise InvalidTask(
            f"{where or 'task '}payload is {len(encoded)} bytes of JSON; "
            f"the limit is {MAX_PAYLOAD_BYTES}"
        )
    return encoded
