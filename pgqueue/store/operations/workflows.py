"""Workflows: pushing a graph of tasks, settling the children of nodes that ended, reopening
them when a node is retried, and reading a workflow back.

Which node runs when is decided in the database only: the statement that ends a node (an
attempt's result, a cancel) is followed in the same transaction by ``settle_workflow_children``,
which counts the ended parents off their children under row locks; the one that counts off a
child's last parent releases it, so it is released exactly once.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgqueue.errors import InvalidTask
from pgqueue.registry import KindRegistry, KindSpec
from pgqueue.store.executor import Operation, Statement, Steps
from pgqueue.store.operations.claims import int_array
from pgqueue.store.operations.push import check_capacity
from pgqueue.store.queries import Queries
from pgqueue.task import JSON_ENCODER, validate_group, validate_kind_name, validate_priority
from pgqueue.tracing import current_trace_context
from pgqueue.workflow import InvalidWorkflow, Workflow

MAX_WORKFLOW_BYTES = 64 * 1_048_576  # the JSON of one workflow's nodes


class WorkflowIds(dict[str, int]):
    """The ids of a pushed workflow's tasks by node name, and the workflow's id
    (``workflow_id``, for ``GET /workflows/{id}`` and the dashboard)."""

    workflow_id: str

    def __init__(self, workflow_id: str, ids: dict[str, int]) -> None:
        super().__init__(ids)
        self.workflow_id = workflow_id


def push_workflow(
    registry: KindRegistry, queries: Queries, workflow: Workflow
) -> Operation[WorkflowIds]:
    """Validate ``workflow`` (raising before any SQL) and build the operation that inserts its
    nodes in one statement; capped kinds are locked and counted first, as ``push_tasks`` does.
    Returns the node ids by name."""
    if not isinstance(workflow, Workflow):
        raise InvalidWorkflow(f"expected a Workflow, got {type(workflow).__name__}")
    ordered = workflow.ordered()
    rows: list[tuple[Any, ...]] = []
    specs: dict[str, KindSpec] = {}
    for node, parents in ordered:
        task = node.task
        spec = specs.get(task.kind)
        if spec is None:
            spec = specs[task.kind] = registry.get(validate_kind_name(task.kind))
        priority = task.priority
        if priority is None:
            priority = spec.options.priority
        else:
            validate_priority(priority)
        if task.group is not None:
            validate_group(task.group)
        rows.append(
            (
                task.kind,
                task.payload,
                spec.options.max_attempts,
                priority,
                task.group,
                node.name,
                [p + 1 for p in parents],
                node.when,
            )
        )
    try:
        document = JSON_ENCODER.encode(rows)
    except (TypeError, ValueError, RecursionError) as exc:
        for node, _ in ordered:
            try:
                JSON_ENCODER.encode(node.task.payload)
            except (TypeError, ValueError, RecursionError) as inner:
                raise InvalidTask(
                    f"node {node.name!r}: payload is not JSON-serialisable: {inner}"
                ) from inner
        raise InvalidTask(f"workflow is not JSON-serialisable: {exc}") from exc
    if len(document) > MAX_WORKFLOW_BYTES:
        raise InvalidWorkflow(
            f"the workflow is {len(document)} bytes of JSON; the limit is {MAX_WORKFLOW_BYTES}"
        )
    workflow_id = str(uuid.uuid4())
    trace = current_trace_context()  # every node continues the pushing span's trace
    capped = sorted(
        Counter(row[0] for row in rows if specs[row[0]].options.max_pending is not None).items()
    )
    names = [node.name for node, _ in ordered]

    def steps() -> Steps[WorkflowIds]:
        yield from check_capacity(registry, queries, capped)
        inserted = yield Statement(
            queries["push_workflow"],
            {
                "nodes": document,
                "workflow_id": workflow_id,
                "channel": queries.channel,
                "trace": trace,
            },
        )
        return WorkflowIds(workflow_id, {names[int(row[0]) - 1]: row[1] for row in inserted})

    return Operation(steps(), transactional=True)


def settle_steps(queries: Queries, ended: Sequence[int]) -> Steps[list[int]]:
    """Settle the children of the workflow nodes ``ended`` (in this transaction), then the
    children of those it cancelled, until none is left; returns the ids it released."""
    released: list[int] = []
    ids = list(ended)
    while ids:
        rows = yield Statement(
            queries["settle_workflow_children"],
            {
                "ids": int_array(ids),
                "channel": queries.channel,
                "finished_channel": queries.finished_channel,
            },
        )
        released.extend(row[0] for row in rows if row[1] == "new")
        ids = [row[0] for row in rows if row[1] == "cancelled"]
    return released


def reopen_steps(queries: Queries, reopened: Sequence[int]) -> Steps[None]:
    """Reopen the children of workflow nodes that are open again (``reopened``, retried in
    this transaction): the dependents their failure cancelled are blocked again, transitively."""
    ids = list(reopened)
    while ids:
        rows = yield Statement(queries["reopen_workflow_children"], {"ids": int_array(ids)})
        ids = [row[0] for row in rows]
    return None


def end_abandoned_nodes(
    queries: Queries, kinds: Sequence[str], limit: int = 1000
) -> Operation[list[int]]:
    """End the workflow nodes of ``kinds`` whose last attempt's worker died (out of attempts,
    lease over, no result) and settle their children, in one transaction; returns their ids.
    The retention sweeper calls it each janitor period."""

    def steps() -> Steps[list[int]]:
        rows = yield Statement(
            queries["end_abandoned_workflow_nodes"], {"kinds": list(kinds), "limit": limit}
        )
        ended = [row[0] for row in rows]
        if ended:
            yield from settle_steps(queries, ended)
        return ended

    return Operation(steps(), transactional=True)


def settle_children(queries: Queries, ended: Sequence[int]) -> Operation[list[int]]:
    """:func:`settle_steps` as an operation of its own transaction."""
    return Operation(settle_steps(queries, ended), transactional=True)


@dataclass(frozen=True, slots=True)
class WorkflowNode:
    """One node of a workflow as stored (what ``get_workflow`` returns)."""

    id: int
    kind: str
    node: str
    status: str
    parents: list[int]
    children: list[int]
    when: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    attempts_elapsed: int
    messages: list[str]


def check_workflow_id(workflow_id: object) -> str:
    """A workflow id as canonical text; :class:`InvalidTask` for anything but a UUID."""
    try:
        return str(uuid.UUID(str(workflow_id)))
    except ValueError:
        raise InvalidTask(f"a workflow id is a UUID, got {workflow_id!r}") from None


def get_workflow(queries: Queries, workflow_id: str) -> Operation[list[WorkflowNode]]:
    """The nodes of a workflow in push order (empty for an unknown id)."""
    canonical = check_workflow_id(workflow_id)

    def steps() -> Steps[list[WorkflowNode]]:
        rows = yield Statement(queries["get_workflow"], {"workflow_id": canonical})
        return [
            WorkflowNode(
                id=row[0],
                kind=row[1],
                node=row[2],
                status=row[3],
                parents=list(row[4]),
                children=list(row[5]),
                when=row[6],
                created_at=row[7],
                started_at=row[8],
                finished_at=row[9],
                attempts_elapsed=row[10],
                messages=list(row[11]),
            )
            for row in rows
        ]

    return Operation(steps(), readonly=True)


def get_nodes(queries: Queries, ids: Sequence[int]) -> Operation[dict[int, tuple[str, str, str]]]:
    """(kind, node name, status) of tasks by id (a task's parents and children)."""

    def steps() -> Steps[dict[int, tuple[str, str, str]]]:
        if not ids:
            return {}
        rows = yield Statement(queries["get_tasks_nodes"], {"ids": int_array(ids)})
        return {row[0]: (row[1], row[2], row[3]) for row in rows}

    return Operation(steps(), readonly=True)
