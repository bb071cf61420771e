"""Reading and changing single tasks and lists of tasks: get, list, cancel, retry, find."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgqueue.bounds import MAX_ATTEMPTS, MAX_INT
from pgqueue.errors import InvalidTask
from pgqueue.registry import KindRegistry
from pgqueue.store.executor import Operation, Statement, Steps
from pgqueue.store.operations.checks import check_int_range
from pgqueue.store.operations.kinds import require_known_kind
from pgqueue.store.operations.push import MAX_PAYLOAD_BYTES
from pgqueue.store.operations.workflows import reopen_steps, settle_steps
from pgqueue.store.queries import Queries
from pgqueue.task import (
    STORED_STATUSES,
    Status,
    TaskInfo,
    decode_payload,
    encode_payload,
    validate_external_key,
    validate_kind_name,
)

MAX_LIST_LIMIT = 1000


PAYLOAD_SCAN_ROWS = 10_000  # rows a payload_contains search looks at, newest first


MAX_TASK_ID = 2**63 - 1  # bigint


def cancel_task_by_key(
    registry: KindRegistry, queries: Queries, kind: str, external_key: str
) -> Operation[bool]:
    """Cancel the waiting or running task with this key; True when one was cancelled.

    The kind need not be registered here (an operator tool declares nothing); a kind neither
    registered nor known to the database is :class:`UnknownKind`.
    """
    validate_kind_name(kind)
    if validate_external_key(external_key) is None:
        raise InvalidTask("cancel_task_by_key needs an external_key")
    known = require_known_kind(registry, queries, kind)

    def steps() -> Steps[bool]:
        yield from known.steps
        rows = yield Statement(
            queries["cancel_task"],
            {
                "id": None,
                "kind": kind,
                "external_key": external_key,
                "channel": queries.channel,
                "finished_channel": queries.finished_channel,
            },
        )
        if rows and rows[0][4]:  # a workflow node: its dependents learn of it now
            yield from settle_steps(queries, [rows[0][0]])
        return bool(rows)

    return Operation(steps(), transactional=True)


def retry_tasks(
    registry: KindRegistry, queries: Queries, kind: str, attempts: int, limit: int
) -> Operation[int]:
    """Give up to ``limit`` exhausted tasks of ``kind`` ``attempts`` fresh attempts (the kind
    need not be registered here, but must be known to this process or the database)."""
    validate_kind_name(kind)
    for name, value, maximum in (("attempts", attempts, MAX_ATTEMPTS), ("limit", limit, MAX_INT)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
            raise InvalidTask(
                f"retry_tasks: {name} must be an int from 1 to {maximum}, got {value!r}"
            )
    known = require_known_kind(registry, queries, kind)

    def steps() -> Steps[int]:
        yield from known.steps
        rows = yield Statement(
            queries["retry_tasks"],
            {"kind": kind, "attempts": attempts, "limit": limit, "channel": queries.channel},
        )
        if rows[0][2]:  # workflow nodes: reopen the dependents their failure cancelled
            yield from reopen_steps(queries, list(rows[0][2]))
        return int(rows[0][0])

    return Operation(steps(), transactional=True)


def get_task(
    queries: Queries, task_id: int, *, replica_ok: bool = False
) -> Operation[TaskInfo | None]:
    """Read one task by id (``None`` when there is no such row); ``replica_ok`` lets a
    primary/replica executor read it from a replica that may lag behind the primary."""
    if not isinstance(task_id, int) or isinstance(task_id, bool):
        raise InvalidTask(f"task id must be an int, got {task_id!r}")
    exists = 0 < task_id <= MAX_TASK_ID  # no other id can exist (and the driver would fail)

    def steps() -> Steps[TaskInfo | None]:
        rows = (yield Statement(queries["get_task"], {"id": task_id})) if exists else []
        return task_info(rows[0]) if rows else None

    return Operation(steps(), readonly=replica_ok)


def get_tasks(queries: Queries, task_ids: Sequence[int]) -> Operation[list[TaskInfo]]:
    """Read the tasks with these ids that exist (in no particular order)."""

    def steps() -> Steps[list[TaskInfo]]:
        rows = yield Statement(queries["get_tasks"], {"ids": list(task_ids)})
        return [task_info(row) for row in rows]

    return Operation(steps())


def get_finished_results(
    queries: Queries, task_ids: Sequence[int]
) -> Operation[dict[int, tuple[str, Status, Any]]]:
    """The kept ``(kind, status, result)`` of waited tasks deleted as they ended, by id."""

    def steps() -> Steps[dict[int, tuple[str, Status, Any]]]:
        rows = yield Statement(queries["get_finished_results"], {"ids": list(task_ids)})
        return {row[0]: (row[1], Status(row[2]), decode_payload(row[3])) for row in rows}

    return Operation(steps())


def mark_task_waited(queries: Queries, task_id: int) -> Operation[TaskInfo | None]:
    """Mark the task as waited on (its end is then announced, and kept a while if its row is
    deleted) and read it in the same statement; ``None`` when there is no such row."""
    check_task_id(task_id, "task id")

    def steps() -> Steps[TaskInfo | None]:
        rows = yield Statement(
            queries["mark_task_waited"], {"id": task_id, "channel": queries.channel}
        )
        return task_info(rows[0]) if rows else None

    return Operation(steps())


def check_task_id(value: object, name: str) -> int:
    """Return ``value`` if it is a positive 64-bit int; raise :class:`InvalidTask` otherwise."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidTask(f"{name} must be an int, got {value!r}")
    if not 1 <= value <= 2**63 - 1:
        raise InvalidTask(f"{name} must be a positive 64-bit integer, got {value!r}")
    return value


def task_info(row: Sequence[Any]) -> TaskInfo:
    """A :class:`TaskInfo` from a row of ``get_task``'s columns."""
    (id_, kind, payload, key, status, processing, elapsed, left, max_attempts, messages,
     delayed_till, created_at, updated_at, started_at, finished_at, result,
     snoozes) = row[:17]  # fmt: skip
    workflow_id, node, parents, children = row[17:21] if len(row) > 17 else (None,) * 4
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
        result=decode_payload(result),
        snoozes=snoozes,
        workflow_id=workflow_id,
        node=node,
        parents=list(parents or ()),
        children=list(children or ()),
    )


def list_tasks(
    queries: Queries,
    *,
    kind: str | None = None,
    status: str | Status | None = None,
    key_prefix: str | None = None,
    payload_contains: Any = None,
    before_id: int | None = None,
    limit: int = 50,
) -> Operation[list[TaskInfo]]:
    """A page of tasks, newest first (id descending), every filter optional.

    ``before_id`` is the cursor: the last id of the previous page (new tasks get higher ids, so
    pages stay stable while tasks are pushed). ``status`` is a stored status or ``processing``.
    ``payload_contains`` is a JSON value the payload must contain (``@>``); that search looks
    only at the :data:`PAYLOAD_SCAN_ROWS` newest tasks matching the other filters below the
    cursor, so its cost is bounded: an empty page then means "none among those", and the next
    page can continue from ``before_id`` = the last id scanned by the caller.
    """
    params: dict[str, Any] = {
        "kind": None if kind is None else validate_kind_name(kind),
        "status": _check_status_filter(status),
        "key_prefix": None if key_prefix is None else _check_key_prefix(key_prefix),
        "before_id": None if before_id is None else check_task_id(before_id, "before_id"),
        "limit": check_int_range("limit", limit, 1, MAX_LIST_LIMIT),
    }
    name = "list_tasks"
    if payload_contains is not None:
        encoded = encode_payload(payload_contains)
        if encoded is not None and len(encoded) > MAX_PAYLOAD_BYTES:
            raise InvalidTask("payload_contains is larger than a payload may be")
        params["payload_contains"] = encoded
        params["scan"] = PAYLOAD_SCAN_ROWS
        name = "list_tasks_by_payload"

    sql = queries[name]
    if params["status"] is not None:
        sql = sql.replace(STATUS_LITERAL, _status_literal(params["status"]) + " --", 1)

    def steps() -> Steps[list[TaskInfo]]:
        rows = yield Statement(sql, params)
        return [task_info(row) for row in rows]

    return Operation(steps())


STATUS_LITERAL = "-- __status_literal__"


def _status_literal(status: str) -> str:
    """The stored-status conjunct equivalent to the derived ``status`` filter (which the query
    still applies): ``processing`` rows are claimed; every other status is stored as is."""
    if status == Status.PROCESSING.value:
        return "AND status IN ('new', 'must_retry', 'no_attempts_left') AND claim_token IS NOT NULL"
    stored = Status(status)  # raises for anything outside the enum
    assert stored in STORED_STATUSES
    return f"AND status = '{stored.value}'"


def _check_status_filter(status: object) -> str | None:
    if status is None:
        return None
    allowed = [s.value for s in (*STORED_STATUSES, Status.PROCESSING)]
    if isinstance(status, str) and status in allowed:
        return str(status)
    raise InvalidTask(f"status must be one of {', '.join(allowed)}; got {status!r}")


def _check_key_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not prefix:
        raise InvalidTask(f"key_prefix must be a non-empty string, got {prefix!r}")
    validate_external_key(prefix)
    return prefix


def cancel_task(queries: Queries, task_id: int) -> Operation[bool]:
    """Cancel the waiting or running task with this id; True when it was cancelled."""
    check_task_id(task_id, "task id")

    def steps() -> Steps[bool]:
        rows = yield Statement(
            queries["cancel_task"],
            {
                "id": task_id,
                "kind": None,
                "external_key": None,
                "channel": queries.channel,
                "finished_channel": queries.finished_channel,
            },
        )
        if rows and rows[0][4]:  # a workflow node: its dependents learn of it now
            yield from settle_steps(queries, [rows[0][0]])
        return bool(rows)

    return Operation(steps(), transactional=True)


def retry_task(queries: Queries, task_id: int, attempts: int) -> Operation[bool]:
    """Make the task with this id due now unless it is running: an ended one (out of attempts,
    cancelled or succeeded) gets ``attempts`` fresh attempts; True when the task changed."""
    check_task_id(task_id, "task id")
    check_int_range("attempts", attempts, 1, MAX_ATTEMPTS)

    def steps() -> Steps[bool]:
        rows = yield Statement(
            queries["retry_task"], {"id": task_id, "attempts": attempts, "channel": queries.channel}
        )
        if rows and rows[0][2]:  # an ended workflow node: reopen what its end cancelled
            yield from reopen_steps(queries, [rows[0][0]])
        return bool(rows)

    return Operation(steps(), transactional=True)


def find_task_id_by_key(queries: Queries, kind: str, external_key: str) -> Operation[int | None]:
    """The id of the task holding ``(kind, external_key)``, or ``None``."""
    validate_kind_name(kind)
    if validate_external_key(external_key) is None:
        raise InvalidTask("find_task_id_by_key needs an external_key")

    def steps() -> Steps[int | None]:
        rows = yield Statement(
            queries["get_task_id_by_key"], {"kind": kind, "external_key": external_key}
        )
        return int(rows[0][0]) if rows else None

    return Operation(steps())


ANY_PAYLOAD: Any = object()


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
