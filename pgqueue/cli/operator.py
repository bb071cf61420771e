"""Operator commands: ``pgqueue status``, ``pgqueue tasks …``, ``pgqueue kinds …``,
``pgqueue audit``.

They work from the database alone (no application module): the queue they build declares no
kind. Bad input and database errors end in one line on stderr and exit code 1. Their actions
are recorded in the audit log under the OS user, with source ``cli``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from pgqueue.audit import Actor, acting_as, os_user
from pgqueue.cli.common import (
    RETRY_CHUNK,
    DsnOption,
    JsonOption,
    OperatorError,
    SchemaOption,
    _kind_dict,
    _lag,
    _limits_text,
    _plain,
    _print,
    _print_json,
    _table,
    _task_dict,
    _task_id,
    operator_queue,
)
from pgqueue.cli.kinds import audit, kinds_app
from pgqueue.store import operations
from pgqueue.store.queries import DEFAULT_SCHEMA
from pgqueue.task import COUNTED_STATUSES

if TYPE_CHECKING:
    pass

tasks_app = typer.Typer(help="List, show, cancel and retry tasks.", no_args_is_help=True)


def status(
    dsn: DsnOption,
    schema: SchemaOption = DEFAULT_SCHEMA,
    minutes: Annotated[int, typer.Option(help="Throughput window in minutes.")] = 5,
    as_json: JsonOption = False,
) -> None:
    """Per kind: tasks per status, queue lag, throughput of the last minutes, paused flag."""
    with operator_queue(dsn, schema) as queue:
        kinds = queue.list_kinds()
        points = queue.throughput(minutes=minutes)
        health = queue.table_health()
    for problem in health.problems:  # on stderr: --json output stays one document
        typer.echo(f"pgqueue: warning: {problem}", err=True)
    totals: dict[str, dict[str, int]] = {}
    for point in points:
        total = totals.setdefault(
            point.kind, {"succeeded": 0, "failed": 0, "exhausted": 0, "cancelled": 0}
        )
        for name in total:
            total[name] += getattr(point, name)
    if as_json:
        _print_json(
            [
                {**_kind_dict(k), "throughput": totals.get(k.kind, {}), "minutes": minutes}
                for k in kinds
            ]
        )
        return
    table = _table(title=f"pgqueue status (schema {schema}, throughput of the last {minutes} min)")
    table.add_column("kind")
    table.add_column("paused")
    for name in COUNTED_STATUSES:
        table.add_column(name, justify="right")
    table.add_column("lag", justify="right")
    table.add_column("limits")
    table.add_column("ok/min", justify="right")
    table.add_column("failed/min", justify="right")
    for kind in kinds:
        total = totals.get(kind.kind, {})
        failed = total.get("failed", 0) + total.get("exhausted", 0)
        finished_mark = "~" if kind.finished_estimated else ""
        table.add_row(
            kind.kind,
            "yes" if kind.paused else "",
            *(
                f"{finished_mark if name in ('succeeded', 'cancelled') else ''}{kind.counts[name]}"
                for name in COUNTED_STATUSES
            ),
            _lag(kind.oldest_due_seconds),
            _limits_text(kind),
            f"{total.get('succeeded', 0) / minutes:.1f}",
            f"{failed / minutes:.1f}",
        )
    _print(table)
    typer.echo(
        f"tasks table: {health.dead_rows:,} dead rows, {health.live_rows:,} live, "
        f"{health.total_bytes / 1_048_576:.1f} MB with its indexes"
    )


@tasks_app.command("list")
def list_tasks(
    dsn: DsnOption,
    schema: SchemaOption = DEFAULT_SCHEMA,
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="new, must_retry, no_attempts_left, cancelled, succeeded, blocked or processing."
        ),
    ] = None,
    key_prefix: Annotated[str | None, typer.Option(help="External keys starting so.")] = None,
    before_id: Annotated[str | None, typer.Option(help="Page cursor: the last id shown.")] = None,
    limit: Annotated[int, typer.Option(help="Most tasks to show (1-1000).")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Tasks, newest first."""
    with operator_queue(dsn, schema) as queue:
        cursor = None if before_id is None else _task_id(before_id)
        tasks = queue.list_tasks(
            kind=kind, status=status, key_prefix=key_prefix, before_id=cursor, limit=limit
        )
    if as_json:
        _print_json([_task_dict(t) for t in tasks])
        return
    table = _table()
    for column in ("id", "kind", "status", "key", "attempts", "due/lease", "updated"):
        table.add_column(column)
    for task in tasks:
        table.add_row(
            str(task.id),
            task.kind,
            task.status.value,
            task.external_key or "",
            f"{task.attempts_elapsed}/{task.max_attempts}",
            task.delayed_till.isoformat(timespec="seconds") if task.delayed_till else "",
            task.updated_at.isoformat(timespec="seconds") if task.updated_at else "",
        )
    _print(table)
    if len(tasks) == limit:
        typer.echo(f"next page: --before-id {tasks[-1].id}")


@tasks_app.command("show")
def show_task(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="Task id.")],
    dsn: DsnOption,
    schema: SchemaOption = DEFAULT_SCHEMA,
    as_json: JsonOption = False,
) -> None:
    """One task with its payload, attempts, error messages and timestamps."""
    with operator_queue(dsn, schema) as queue:
        task = queue.get_task(_task_id(task_id))
        if task is None:
            raise OperatorError(f"no task with id {task_id}")
        related = queue.get_nodes([*task.parents, *task.children]) if task.workflow_id else {}
    data = _task_dict(task)
    for field in ("parents", "children"):  # a workflow node's neighbours, by name and status
        data[field] = [
            {"id": i, "node": related[i][1], "status": related[i][2]}
            if i in related
            else {"id": i, "node": None, "status": "deleted"}
            for i in data[field]
        ]
    if as_json:
        _print_json(data)
        return
    table = _table(show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in data.items():
        if name in ("payload", "result"):
            value = json.dumps(value, ensure_ascii=False)
        elif name == "messages":
            value = "\n".join(value) or "-"
        elif name in ("parents", "children"):
            value = (
                "\n".join(f"{n['node'] or '?'} (task {n['id']}, {n['status']})" for n in value)
                or "-"
            )
        table.add_row(name, "-" if value is None else str(_plain(value)))
    _print(table)


@tasks_app.command("cancel")
def cancel_task(
    kind: Annotated[str, typer.Argument(help="The task's kind.")],
    key: Annotated[str, typer.Argument(help="The task's external key.")],
    dsn: DsnOption,
    schema: SchemaOption = DEFAULT_SCHEMA,
    as_json: JsonOption = False,
) -> None:
    """Cancel the waiting or running task of KIND with external key KEY."""
    with operator_queue(dsn, schema) as queue:
        cancelled = queue.cancel_task_by_key(kind, key)
    if as_json:
        _print_json({"kind": kind, "external_key": key, "cancelled": cancelled})
    elif cancelled:
        typer.echo(f"cancelled the task of {kind!r} with key {key!r}")
    else:
        typer.echo(f"no waiting or running task of {kind!r} with key {key!r}")


@tasks_app.command("retry")
def retry_tasks(
    kind: Annotated[str, typer.Argument(help="Kind whose exhausted tasks to retry.")],
    dsn: DsnOption,
    schema: SchemaOption = DEFAULT_SCHEMA,
    limit: Annotated[int, typer.Option(help="Most tasks to retry.", min=1)] = 1000,
    attempts: Annotated[int, typer.Option(help="Fresh attempts per task.", min=1)] = 1,
    as_json: JsonOption = False,
) -> None:
    """Give exhausted (no_attempts_left) tasks of KIND fresh attempts, oldest first."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    revived = 0
    with (
        operator_queue(dsn, schema) as queue,
        Progress(
            TextColumn("retrying {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            transient=True,
            disable=as_json,
        ) as progress,
    ):
        bar = progress.add_task(kind, total=limit)
        # One audit entry for the whole command, not one per chunk.
        with acting_as(Actor("cli", os_user(), record=False)):
            try:
                while revived < limit:
                    chunk = queue.retry_tasks(kind, attempts, min(RETRY_CHUNK, limit - revived))
                    revived += chunk
                    progress.update(bar, completed=revived)
                    if chunk == 0:
                        break
            finally:
                detail = {"attempts": attempts, "limit": limit}
                summary = operations.Action("retry_kind", kind, detail=detail)
                queue.executor.run(operations.record_audit(queue.queries, summary, revived))
    if as_json:
        _print_json({"kind": kind, "retried": revived})
    else:
        typer.echo(f"retried {revived} task(s) of {kind!r}")


def register(app: typer.Typer) -> None:
    """Add the operator commands to the ``pgqueue`` command."""
    app.command("status")(status)
    app.command("audit")(audit)
    app.add_typer(tasks_app, name="tasks")
    app.add_typer(kinds_app, name="kinds")
