"""The audit log: recording operator actions in their own transaction, and reading it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pgqueue.audit import Actor, AuditEntry, current_actor
from pgqueue.errors import InvalidTask
from pgqueue.store.executor import Operation, Statement, Steps
from pgqueue.store.operations.checks import check_int_range
from pgqueue.store.queries import Queries
from pgqueue.task import JSON_ENCODER

T = TypeVar("T")

MAX_AUDIT_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Action:
    """What an operator did, before its row count is known."""

    action: str
    kind: str | None = None
    task_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _entries_document(entries: Sequence[tuple[Actor, Action, int]]) -> str:
    return JSON_ENCODER.encode(
        [
            {
                "actor": actor.name,
                "source": actor.source,
                "action": action.action,
                "kind": action.kind,
                "task_id": action.task_id,
                "detail": {**actor.detail, **action.detail},
                "rows": rows,
            }
            for actor, action, rows in entries
            if actor.record
        ]
    )


def audited(
    queries: Queries,
    op: Operation[T],
    action: Action,
    rows_of: Callable[[T], int] = lambda result: int(bool(result)),
) -> Operation[T]:
    """``op`` followed, in the same transaction, by its audit entry under the current actor
    (none when that actor records nothing); ``rows_of(result)`` is the entry's row count."""
    actor = current_actor()
    if not actor.record:
        return op
    return audited_entries(queries, op, lambda result: [(actor, action, rows_of(result))])


def audited_entries(
    queries: Queries,
    op: Operation[T],
    entries_of: Callable[[T], Sequence[tuple[Actor, Action, int]]],
) -> Operation[T]:
    """``op`` followed, in the same transaction, by the entries ``entries_of(result)`` gives
    (each with its own actor: a coalesced push carries many requests' tasks)."""

    def steps() -> Steps[T]:
        result = yield from op.steps
        entries = [entry for entry in entries_of(result) if entry[0].record]
        if entries:
            document = _entries_document(entries)
            yield Statement(queries["insert_audit_entries"], {"entries": document})
        return result

    return Operation(steps(), transactional=True)


def record_audit(queries: Queries, action: Action, rows: int) -> Operation[None]:
    """Record one action under the current actor (a bulk action's summary), whether or not
    that actor records each call."""
    actor = current_actor()
    document = _entries_document([(replace(actor, record=True), action, rows)])

    def steps() -> Steps[None]:
        yield Statement(queries["insert_audit_entries"], {"entries": document})

    return Operation(steps())


def list_audit_entries(
    queries: Queries,
    *,
    limit: int = 50,
    before_id: int | None = None,
    kind: str | None = None,
    source: str | None = None,
    action: str | None = None,
) -> Operation[list[AuditEntry]]:
    """A page of the audit log, newest first; pass the last id as ``before_id`` for the next."""
    check_int_range("limit", limit, 1, MAX_AUDIT_PAGE)
    if before_id is not None:
        check_int_range("before_id", before_id, 1, 2**63 - 1)
    for name, value in (("kind", kind), ("source", source), ("action", action)):
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidTask(f"{name} must be a non-empty string, got {value!r}")
    params = {
        "limit": limit,
        "before_id": before_id,
        "kind": kind,
        "source": source,
        "action": action,
    }

    def steps() -> Steps[list[AuditEntry]]:
        rows = yield Statement(queries["list_audit_entries"], params)
        return [
            AuditEntry(
                id=row[0],
                at=row[1],
                actor=row[2],
                source=row[3],
                action=row[4],
                kind=row[5],
                task_id=row[6],
                detail=row[7] if isinstance(row[7], dict) else _json_object(row[7]),
                rows=int(row[8]),
            )
            for row in rows
        ]

    return Operation(steps(), readonly=True)


def _json_object(value: Any) -> dict[str, Any]:
    """A ``jsonb`` value as a dict (asyncpg hands ``jsonb`` over as text)."""
    decoded = json.loads(value) if isinstance(value, str) else value
    return decoded if isinstance(decoded, dict) else {}
