"""Every public database operation of pgqueue, written once and run by any executor."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pgqueue.errors import CapacityExceeded, InvalidTask
from pgqueue.executor import Operation, Statement, Steps
from pgqueue.queries import Queries
from pgqueue.registry import KindRegistry, KindSpec
from pgqueue.task import (
    JSON_ENCODER,
    Status,
    Task,
    TaskInfo,
    decode_payload,
    encode_payload,
    validate_external_key,
    validate_kind_name,
)

MAX_PAYLOAD_BYTES = 1_048_576
MAX_SWEEP_BATCHES = 100  # per sweep; the rest waits for the next period


def delay_seconds(delay: float | int | timedelta) -> float:
    """Validate a push delay and return it in seconds."""
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
    return seconds


def push_tasks(
    registry: KindRegistry,
    queries: Queries,
    tasks: Sequence[Task],
    delay: float | int | timedelta = 0,
) -> Operation[list[int | None]]:
    """Validate ``tasks`` (raising before any SQL) and build the operation that inserts them.

    The operation returns one id per task, ``None`` where the ``(kind, external_key)`` exists.
    Kinds with ``max_pending`` are locked and counted first, in one transaction, so the cap
    holds exactly across processes. A batch travels as one JSON document (one parameter):
    serialising it is one C-speed ``json.dumps`` instead of adapting every element.
    """
    if isinstance(tasks, Task):
        raise InvalidTask("push_tasks takes a sequence of Task; use push_task for one")
    seconds = delay_seconds(delay)
    if len(tasks) == 1:
        single = _push_uncapped_one(registry, queries, tasks[0], seconds)
        if single is not None:
            return single
    rows: list[tuple[str, Any, str | None, int]] = []
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
        rows.append((kind, task.payload, key, spec.options.max_attempts))
    document = _encode_batch(rows)
    capped_kinds = {kind for kind, spec in specs.items() if spec.options.max_pending is not None}
    capped = sorted(Counter(row[0] for row in rows if row[0] in capped_kinds).items())
    single_task = len(rows) == 1
    keyed = any(row[2] is not None for row in rows)

    def steps() -> Steps[list[int | None]]:
        if not rows:
            return []
        for kind, requested in capped:
            cap = registry.get(kind).options.max_pending
            assert cap is not None
            yield Statement(queries["lock_kind_capacity"], {"lock_key": f"{queries.schema}:{kind}"})
            counted = yield Statement(queries["count_pending_tasks"], {"kind": kind})
            pending = int(counted[0][0])
            if pending + requested > cap:
                raise CapacityExceeded(kind, cap, pending, requested)
        if single_task:
            kind, _, key, max_attempts = rows[0]
            statement = _single_push(queries, kind, document[1], key, max_attempts, seconds)
            inserted = yield statement
            return [inserted[0][0] if inserted else None]
        inserted = yield Statement(
            queries["push_tasks" if keyed else "push_keyless_tasks"],
            {"tasks": document[0], "delay": seconds, "channel": queries.channel},
        )
        return [row[1] for row in inserted]

    return Operation(steps(), transactional=bool(capped))


def _single_push(
    queries: Queries,
    kind: str,
    payload: str | None,
    key: str | None,
    max_attempts: int,
    seconds: float,
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
            "channel": queries.channel,
        },
    )


def _push_uncapped_one(
    registry: KindRegistry, queries: Queries, task: Task, seconds: float
) -> Operation[list[int | None]] | None:
    """The common single push, with less to build; None for a capped kind (counted first)."""
    if not isinstance(task, Task):
        raise InvalidTask(f"expected a Task, got {type(task).__name__}")
    kind, key = task.kind, task.external_key
    spec = registry.get(kind)  # registered kinds were validated; a miss is validated there
    if spec.options.max_pending is not None:
        return None
    if key is not None:
        validate_external_key(key)
    payload = _encode_checked(0, task.payload)
    statement = _single_push(queries, kind, payload, key, spec.options.max_attempts, seconds)

    def steps() -> Steps[list[int | None]]:
        inserted = yield statement
        return [inserted[0][0] if inserted else None]

    return Operation(steps())


def _encode_batch(rows: list[tuple[str, Any, str | None, int]]) -> tuple[str, str | None]:
    """JSON for a batch, or for one task its payload alone; validated either way.

    A batch is encoded at once; only when that fails or comes out large are payloads encoded
    one by one, to name the offending task.
    """
    if len(rows) == 1:
        return "", _encode_checked(0, rows[0][1])
    try:
        document = JSON_ENCODER.encode(rows)
    except (TypeError, ValueError, RecursionError):
        document = None
    if document is None or len(document) > MAX_PAYLOAD_BYTES or "\\u0000" in document:
        for index, row in enumerate(rows):
            _encode_checked(index, row[1])
        assert document is not None
    return document, None


def _encode_checked(index: int, payload: Any) -> str | None:
    """One task's payload as JSON, or an :class:`InvalidTask` naming the task."""
    try:
        encoded = encode_payload(payload)
    except InvalidTask as exc:
        raise InvalidTask(f"task {index}: {exc}") from exc.__cause__
    if encoded is not None and len(encoded) > MAX_PAYLOAD_BYTES:
        raise InvalidTask(
            f"task {index}: payload is {len(encoded)} bytes of JSON; "
            f"the limit is {MAX_PAYLOAD_BYTES}"
        )
    return encoded


def cancel_task_by_key(
    registry: KindRegistry, queries: Queries, kind: str, external_key: str
) -> Operation[bool]:
    """Cancel the waiting or running task with this key; True when one was cancelled."""
    registry.get(validate_kind_name(kind))
    if validate_external_key(external_key) is None:
        raise InvalidTask("cancel_task_by_key needs an external_key")

    def steps() -> Steps[bool]:
        rows = yield Statement(
            queries["cancel_task_by_key"],
            {"kind": kind, "external_key": external_key, "channel": queries.channel},
        )
        return bool(rows)

    return Operation(steps())


def retry_tasks(
    registry: KindRegistry, queries: Queries, kind: str, attempts: int, limit: int
) -> Operation[int]:
    """Give up to ``limit`` exhausted tasks of ``kind`` ``attempts`` fresh attempts."""
    registry.get(validate_kind_name(kind))
    for name, value in (("attempts", attempts), ("limit", limit)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidTask(f"retry_tasks: {name} must be an int >= 1, got {value!r}")

    def steps() -> Steps[int]:
        rows = yield Statement(
            queries["retry_tasks"],
            {"kind": kind, "attempts": attempts, "limit": limit, "channel": queries.channel},
        )
        return int(rows[0][0])

    return Operation(steps())


def get_task(
    queries: Queries, task_id: int, *, replica_ok: bool = False
) -> Operation[TaskInfo | None]:
    """Read one task by id (``None`` when there is no such row); ``replica_ok`` lets a
    primary/replica executor read it from a replica that may lag behind the primary."""
    if not isinstance(task_id, int) or isinstance(task_id, bool):
        raise InvalidTask(f"task id must be an int, got {task_id!r}")

    def steps() -> Steps[TaskInfo | None]:
        rows = yield Statement(queries["get_task"], {"id": task_id})
        if not rows:
            return None
        (id_, kind, payload, key, status, processing, elapsed, left, max_attempts, messages,
         delayed_till, created_at, updated_at, started_at, finished_at) = rows[0]  # fmt: skip
        stored = Status(status)
        return TaskInfo(
            id=id_,
            kind=kind,
            payload=decode_payload(payload),
            external_key=key,
            status=Status.PROCESSING if processing else stored,
            stored_status=stored,
            attempts_elapsed=elapsed,
            attempts_left=left,
            max_attempts=max_attempts,
            messages=list(messages),
            delayed_till=delayed_till,
            created_at=created_at,
            updated_at=updated_at,
            started_at=started_at,
            finished_at=finished_at,
        )

    return Operation(steps(), readonly=replica_ok)


def count_tasks_by_status(queries: Queries) -> Operation[dict[tuple[str, str], int]]:
    """Number of tasks per (kind, derived status)."""

    def steps() -> Steps[dict[tuple[str, str], int]]:
        rows = yield Statement(queries["count_tasks_by_status"], {})
        return {(kind, status): int(count) for kind, status, count in rows}

    return Operation(steps(), readonly=True)


def sweep_terminal_tasks(
    queries: Queries, kind: str, ttl: float, period: float, batch_size: int
) -> Operation[int | None]:
    """Delete a kind's expired terminal tasks if this process wins its maintenance lock.

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
        yield Statement(queries["mark_kind_swept"], {"kind": kind})
        return deleted

    return Operation(steps(), transactional=True)


ANY_PAYLOAD: Any = object()
"""Match any payload (the default of :func:`find_pushed_tasks`)."""


def find_pushed_tasks(
    queries: Queries, kind: str, payload: Any = ANY_PAYLOAD, external_key: str | None = None
) -> Operation[list[tuple[int, Any, str | None, str]]]:
    """Tasks of ``kind`` (any status), filtered by key and by a payload the stored one contains
    (JSON containment): ``(id, payload, external_key, status)`` rows, oldest first."""
    validate_kind_name(kind)
    if external_key is not None:
        validate_external_key(external_key)
    match_payload = payload is not ANY_PAYLOAD
    params = {
        "kind": kind,
        "match_key": external_key is not None,
        "external_key": external_key,
        "match_payload": match_payload,
        "payload": encode_payload(payload) if match_payload else None,
    }

    def steps() -> Steps[list[tuple[int, Any, str | None, str]]]:
        rows = yield Statement(queries["find_pushed_tasks"], params)
        return [(id_, decode_payload(text), key, status) for id_, text, key, status in rows]

    return Operation(steps())  # tests assert right after pushing: read the primary
