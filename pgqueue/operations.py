"""Every public database operation of pgqueue, written once and run by any executor."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pgqueue.errors import CapacityExceeded, InvalidTask, UnknownKind
from pgqueue.executor import Operation, Row, Statement, Steps
from pgqueue.options import MAX_ATTEMPTS, MAX_INT, MAX_SECONDS
from pgqueue.queries import Queries
from pgqueue.registry import KindRegistry, KindSpec
from pgqueue.task import (
    COUNTED_STATUSES,
    JSON_ENCODER,
    STORED_STATUSES,
    KindInfo,
    Status,
    Task,
    TaskInfo,
    ThroughputPoint,
    decode_payload,
    encode_payload,
    validate_external_key,
    validate_kind_name,
)

MAX_PAYLOAD_BYTES = 1_048_576
MAX_SWEEP_BATCHES = 100  # per sweep; the rest waits for the next period
MAX_LIST_LIMIT = 1000
PAYLOAD_SCAN_ROWS = 10_000  # rows a payload_contains search looks at, newest first
EXACT_FINISHED_BELOW = 100_000  # table rows (planner estimate) below which finished are counted
MAX_THROUGHPUT_MINUTES = 7 * 24 * 60 * 5


MAX_TASK_ID = 2**63 - 1  # bigint


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
    # A delayed push notifies its due time when a worker's poll would find it late: within the
    # longest poll period among the batch's kinds.
    notify_within = max(spec.options.loop.poll_period for spec in specs.values()) if specs else 0.0
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
            statement = _single_push(
                queries, kind, document[1], key, max_attempts, seconds, notify_within
            )
            inserted = yield statement
            return [inserted[0][0] if inserted else None]
        inserted = yield Statement(
            queries["push_tasks" if keyed else "push_keyless_tasks"],
            {
                "tasks": document[0],
                "delay": seconds,
                "notify_within": notify_within,
                "channel": queries.channel,
            },
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
    notify_within: float,
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
    payload = _encode_checked(None, task.payload)
    statement = _single_push(
        queries,
        kind,
        payload,
        key,
        spec.options.max_attempts,
        seconds,
        float(spec.options.loop.poll_period),
    )

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
            {"id": None, "kind": kind, "external_key": external_key, "channel": queries.channel},
        )
        return bool(rows)

    return Operation(steps())


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
        return int(rows[0][0])

    return Operation(steps())


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


def _check_task_id(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidTask(f"{name} must be an int, got {value!r}")
    if not 1 <= value <= 2**63 - 1:
        raise InvalidTask(f"{name} must be a positive 64-bit integer, got {value!r}")
    return value


def task_info(row: Sequence[Any]) -> TaskInfo:
    """A :class:`TaskInfo` from a row of ``get_task``'s columns."""
    (id_, kind, payload, key, status, processing, elapsed, left, max_attempts, messages,
     delayed_till, created_at, updated_at, started_at, finished_at) = row  # fmt: skip
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
        "before_id": None if before_id is None else _check_task_id(before_id, "before_id"),
        "limit": _check_int_range("limit", limit, 1, MAX_LIST_LIMIT),
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
"""Where ``list_tasks`` splices a status filter as literal SQL. A literal, not a parameter: the
planner proves a partial index's predicate only from constants, so a filter on
``no_attempts_left`` uses ``tasks_broken_idx`` (and ``new`` the open-tasks index) instead of
walking the whole table newest first. The value comes from a fixed list, never from input."""


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


def _check_int_range(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidTask(f"{name} must be an int from {low} to {high}, got {value!r}")
    return value


def pause_kind(queries: Queries, kind: str, registered: bool) -> Operation[None]:
    """Pause ``kind`` cluster-wide (claims skip it; pushes still work) and notify workers.

    ``registered`` says the kind is known in this process; otherwise the database must know it
    (a kinds row or a task), else :class:`UnknownKind`.
    """
    return _set_paused(queries, "pause_kind", kind, registered)


def resume_kind(queries: Queries, kind: str, registered: bool) -> Operation[None]:
    """Resume ``kind`` cluster-wide and wake its workers at once."""
    return _set_paused(queries, "resume_kind", kind, registered)


def _set_paused(queries: Queries, name: str, kind: str, registered: bool) -> Operation[None]:
    validate_kind_name(kind)

    def steps() -> Steps[None]:
        rows = yield Statement(
            queries[name], {"kind": kind, "registered": registered, "channel": queries.channel}
        )
        if not rows:
            raise unknown_kind(kind)
        return None

    return Operation(steps())


def unknown_kind(kind: str) -> UnknownKind:
    return UnknownKind(f"kind {kind!r} is unknown: no process declared it and it has no tasks")


def require_known_kind(registry: KindRegistry, queries: Queries, kind: str) -> Operation[None]:
    """Raise :class:`UnknownKind` unless the kind is in ``registry`` or in the database."""
    validate_kind_name(kind)
    registered = kind in registry

    def steps() -> Steps[None]:
        if registered:
            return None
        rows = yield Statement(queries["kind_exists"], {"kind": kind})
        if not rows[0][0]:
            raise unknown_kind(kind)
        return None

    return Operation(steps())


def list_kinds(registry: KindRegistry, queries: Queries) -> Operation[list[KindInfo]]:
    """Every kind known to the database or this process, sorted by name."""

    def steps() -> Steps[list[KindInfo]]:
        overview = yield from read_kind_overview(queries).steps
        names = sorted(overview.kinds | {spec.kind for spec in registry})
        return [
            KindInfo(
                kind=name,
                paused=name in overview.paused,
                counts=overview.counts_of(name),
                oldest_due_seconds=overview.oldest_due.get(name),
                paused_at=overview.paused.get(name),
                finished_estimated=overview.estimated,
                options=registry.get(name).options if name in registry else None,
            )
            for name in names
        ]

    return Operation(steps())


class KindOverview:
    """The rows of ``kind_overview`` by kind: counts, lag and pause state (read by metrics)."""

    def __init__(self) -> None:
        self.kinds: set[str] = set()
        self.counts: dict[tuple[str, str], int] = {}
        self.oldest_due: dict[str, float] = {}
        self.paused: dict[str, Any] = {}
        self.estimated = False

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]]) -> KindOverview:
        overview = cls()
        for kind, status, tasks, due, oldest, estimated, paused_at in rows:
            overview.kinds.add(kind)
            if status is None:  # the kinds row
                if paused_at is not None:
                    overview.paused[kind] = paused_at
                continue
            counts = overview.counts
            counts[kind, status] = counts.get((kind, status), 0) + int(tasks)
            if due:
                counts[kind, "due"] = counts.get((kind, "due"), 0) + int(due)
            if oldest is not None:
                overview.oldest_due[kind] = max(float(oldest), overview.oldest_due.get(kind, 0.0))
            overview.estimated = overview.estimated or bool(estimated)
        return overview

    def counts_of(self, kind: str) -> dict[str, int]:
        return {status: self.counts.get((kind, status), 0) for status in COUNTED_STATUSES}


def read_kind_overview(queries: Queries) -> Operation[KindOverview]:
    """The one statement behind ``list_kinds`` and the ``pgqueue_tasks`` gauges."""

    def steps() -> Steps[KindOverview]:
        rows = yield Statement(
            queries["kind_overview"],
            {"schema": queries.schema, "exact_below": EXACT_FINISHED_BELOW},
        )
        return KindOverview.from_rows(rows)

    return Operation(steps())


def read_throughput(
    queries: Queries, kind: str | None = None, minutes: int = 60
) -> Operation[list[ThroughputPoint]]:
    """Per-minute outcome counts of the last ``minutes`` minutes (minutes without outcomes have
    no point), oldest first."""
    if kind is not None:
        validate_kind_name(kind)
    _check_int_range("minutes", minutes, 1, MAX_THROUGHPUT_MINUTES)

    def steps() -> Steps[list[ThroughputPoint]]:
        rows = yield Statement(queries["read_throughput"], {"kind": kind, "minutes": minutes})
        return [
            ThroughputPoint(k, minute, int(s), int(f), int(e), int(c))
            for k, minute, s, f, e, c in rows
        ]

    return Operation(steps())


def count_tasks_by_status(queries: Queries) -> Operation[dict[tuple[str, str], int]]:
    """Number of tasks per (kind, derived status)."""

    def steps() -> Steps[dict[tuple[str, str], int]]:
        rows = yield Statement(queries["count_tasks_by_status"], {})
        return {(kind, status): int(count) for kind, status, count in rows}

    return Operation(steps(), readonly=True)


def sweep_terminal_tasks(
    queries: Queries,
    kind: str,
    ttl: float,
    period: float,
    batch_size: int,
    throughput_window: float | None = None,
) -> Operation[int | None]:
    """Delete a kind's expired terminal tasks (and throughput rows older than
    ``throughput_window`` seconds) if this process wins its maintenance lock.

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
        if throughput_window is not None:
            yield Statement(
                queries["prune_throughput"], {"kind": kind, "window": throughput_window}
            )
        yield Statement(queries["mark_kind_swept"], {"kind": kind})
        return deleted

    return Operation(steps(), transactional=True)


def cancel_task(queries: Queries, task_id: int) -> Operation[bool]:
    """Cancel the waiting or running task with this id; True when it was cancelled."""
    _check_task_id(task_id, "task id")

    def steps() -> Steps[bool]:
        rows = yield Statement(
            queries["cancel_task"],
            {"id": task_id, "kind": None, "external_key": None, "channel": queries.channel},
        )
        return bool(rows)

    return Operation(steps())


def retry_task(queries: Queries, task_id: int, attempts: int) -> Operation[bool]:
    """Make the task with this id due now unless it is running: an ended one (out of attempts,
    cancelled or succeeded) gets ``attempts`` fresh attempts; True when the task changed."""
    _check_task_id(task_id, "task id")
    _check_int_range("attempts", attempts, 1, MAX_ATTEMPTS)

    def steps() -> Steps[bool]:
        rows = yield Statement(
            queries["retry_task"], {"id": task_id, "attempts": attempts, "channel": queries.channel}
        )
        return bool(rows)

    return Operation(steps())


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


# The worker runtime's statements.


def int_array(values: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers (the hot path skips per-element adaptation)."""
    return "{" + ",".join(map(str, values)) + "}"


def uuid_array(values: Iterable[str]) -> str:
    """A PostgreSQL array literal of UUIDs given as canonical text (as claims return them)."""
    return "{" + ",".join(values) + "}"


def claim_due_tasks(queries: Queries, kind: str, limit: int, lease: float) -> Operation[list[Row]]:
    """Claim up to ``limit`` due tasks of ``kind``, leased for ``lease`` seconds: the rows of
    ``claim_due_tasks`` (empty while the kind is paused)."""

    def steps() -> Steps[list[Row]]:
        return (
            yield Statement(
                queries["claim_due_tasks"], {"kind": kind, "limit": limit, "lease": lease}
            )
        )

    return Operation(steps())


def extend_leases(
    queries: Queries, claims: Sequence[tuple[int, str]], lease: float
) -> Operation[set[int]]:
    """Renew to ``lease`` seconds the leases of ``(id, claim token)`` claims still held; returns
    the ids renewed (a claim cancelled or taken over meanwhile is not)."""

    def steps() -> Steps[set[int]]:
        rows = yield Statement(
            queries["extend_leases"],
            {
                "ids": int_array(c[0] for c in claims),
                "tokens": uuid_array(c[1] for c in claims),
                "lease": lease,
            },
        )
        return {row[0] for row in rows}

    return Operation(steps())


def release_claims(queries: Queries, claims: Sequence[tuple[int, str]]) -> Operation[list[Row]]:
    """Hand ``(id, claim token)`` claims back at once, attempt refunded; returns the
    ``(id, kind)`` rows released."""

    def steps() -> Steps[list[Row]]:
        return (
            yield Statement(
                queries["release_claims"],
                {
                    "ids": int_array(c[0] for c in claims),
                    "tokens": uuid_array(c[1] for c in claims),
                },
            )
        )

    return Operation(steps())


def notify_kinds(queries: Queries, kinds: Sequence[str]) -> Operation[None]:
    """Wake the workers of ``kinds`` in every process (a ``p:<kind>`` notification each)."""

    def steps() -> Steps[None]:
        yield Statement(queries["notify_kinds"], {"channel": queries.channel, "kinds": kinds})
        return None

    return Operation(steps())


def ping_listener(queries: Queries, payload: str) -> Operation[None]:
    """Send ``payload`` on the queue's channel (``listener_ping``), from a connection other
    than the listener's: the listener must hear it back."""

    def steps() -> Steps[None]:
        yield Statement(queries["listener_ping"], {"channel": queries.channel, "payload": payload})
        return None

    return Operation(steps())


def database_now(queries: Queries) -> Operation[datetime]:
    """The database clock, which every schedule follows."""

    def steps() -> Steps[datetime]:
        rows = yield Statement(queries["database_now"], {})
        now: datetime = rows[0][0]
        return now

    return Operation(steps())


def push_periodic_task(
    queries: Queries,
    kind: str,
    slot: datetime,
    payload: str | None,
    external_key: str,
    max_attempts: int,
) -> Operation[int | None]:
    """Enqueue the task of a periodic slot (``payload`` already JSON) unless some process has
    enqueued this or a later slot; returns the new task's id, or ``None``."""

    def steps() -> Steps[int | None]:
        rows = yield Statement(
            queries["push_periodic_task"],
            {
                "kind": kind,
                "slot": slot,
                "payload": payload,
                "external_key": external_key,
                "max_attempts": max_attempts,
                "channel": queries.channel,
            },
        )
        return rows[0][0] if rows else None

    return Operation(steps())


def find_sweepable_kinds(
    queries: Queries, kinds: Iterable[str], ttls: Iterable[float], windows: Iterable[float]
) -> Operation[list[str]]:
    """Which of ``kinds`` (with their terminal TTLs and throughput windows, in seconds) hold a
    terminal task older than the TTL or a throughput row older than the window."""

    def steps() -> Steps[list[str]]:
        rows = yield Statement(
            queries["find_sweepable_kinds"],
            {"kinds": list(kinds), "ttls": list(ttls), "windows": list(windows)},
        )
        return [row[0] for row in rows]

    return Operation(steps())
