"""Operator commands: ``pgqueue status``, ``pgqueue tasks …``, ``pgqueue kinds …``,
``pgqueue audit``.

They work from the database alone (no application module): the queue they build declares no
kind. Bad input and database errors end in one line on stderr and exit code 1. Their actions
are recorded in the audit log under the OS user, with source ``cli``.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pgqueue.audit import SOURCES, Actor, acting_as, os_user
from pgqueue.errors import PgQueueError
from pgqueue.queue import Queue
from pgqueue.store import operations
from pgqueue.store.queries import DEFAULT_SCHEMA
from pgqueue.task import COUNTED_STATUSES, KindInfo, TaskInfo

if TYPE_CHECKING:
    from rich.table import Table

tasks_app = typer.Typer(help="List, show, cancel and retry tasks.", no_args_is_help=True)
kinds_app = typer.Typer(help="List, pause, resume and limit kinds.", no_args_is_help=True)

DsnOption = Annotated[
    str, typer.Option(envvar="PGQUEUE_DSN", help="PostgreSQL DSN (default: $PGQUEUE_DSN).")
]
SchemaOption = Annotated[
    str, typer.Option(envvar="PGQUEUE_SCHEMA", help="Schema holding pgqueue's tables.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

RETRY_CHUNK = 500
CONNECT_TIMEOUT_SECONDS = 10


class OperatorError(Exception):
    """A failure to report in one line."""


@contextmanager
def operator_queue(dsn: str, schema: str) -> Iterator[Queue]:
    """A queue that declares nothing, on a DSN checked first (so a bad one fails at once);
    every error inside becomes one line on stderr and exit code 1."""
    try:
        _check_connection(dsn)
        with (
            acting_as(Actor("cli", os_user())),
            Queue(dsn, schema=schema, max_connections=1) as queue,
        ):
            yield queue
    except typer.Exit:
        raise
    except (PgQueueError, ValueError, OperatorError) as exc:
        _fail(str(exc))
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            _fail(f"database error: {_first_line(exc)}")
        raise


def _check_connection(dsn: str) -> None:
    import psycopg

    try:
        psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_SECONDS).close()
    except psycopg.Error as exc:
        raise OperatorError(f"cannot connect to the database: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _task_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 2**63 - 1:
        raise OperatorError(f"task id must be a positive integer, got {text!r}")
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(_plain(value), indent=2, ensure_ascii=False, default=str))


def _task_dict(task: TaskInfo) -> dict[str, Any]:
    data = asdict(task)
    data["status"] = task.status.value
    data["stored_status"] = task.stored_status.value
    return data


def _kind_dict(kind: KindInfo) -> dict[str, Any]:
    return {
        "kind": kind.kind,
        "paused": kind.paused,
        "paused_at": kind.paused_at,
        "counts": kind.counts,
        "oldest_due_seconds": kind.oldest_due_seconds,
        "finished_estimated": kind.finished_estimated,
        "limit_overrides": None if kind.limit_overrides is None else kind.limit_overrides.as_dict(),
    }


def _limits_text(kind: KindInfo) -> str:
    from pgqueue.limits import describe_limits

    return describe_limits(kind.limit_overrides, kind.options)


def _table(**kwargs: Any) -> Table:
    """A rich table (rich is imported on use: ``pgqueue worker`` starts without it)."""
    from rich.table import Table

    return Table(**kwargs)


def _print(table: Table) -> None:
    from rich.console import Console

    Console().print(table)


def _lag(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


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
        typer.Option(help="new, must_retry, no_attempts_left, cancelled, succeeded or processing."),
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
    if as_json:
        _print_json(_task_dict(task))
        return
    table = _table(show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in _task_dict(task).items():
        if name in ("payload", "result"):
            value = json.dumps(value, ensure_ascii=False)
        elif name == "messages":
            value = "\n".join(value) or "-"
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


@kinds_app.command("list")
def list_kinds(
    dsn: DsnOption, schema: SchemaOption = DEFAULT_SCHEMA, as_json: JsonOption = False
) -> None:
    """Kinds the database knows, with their pause state."""
    with operator_queue(dsn, schema) as queue:
        kinds = queue.list_kinds()
    if as_json:
        _print_json([_kind_dict(k) for k in kinds])
        return
    table = _table()
    for column in ("kind", "paused", "paused since", "open", "lag", "limits"):
        table.add_column(column)
    for kind in kinds:
        open_tasks = sum(kind.counts[s] for s in ("new", "must_retry", "processing"))
        table.add_row(
            kind.kind,
            "yes" if kind.paused else "",
            kind.paused_at.isoformat(timespec="seconds") if kind.paused_at else "",
            str(open_tasks),
            _lag(kind.oldest_due_seconds),
            _limits_text(kind),
        )
    _print(table)


@kinds_app.command("pause")
def pause_kind(
    kind: Annotated[str, typer.Argument(help="Kind to pause in every worker process.")],
    dsn: DsnOption,
    schema: SchemaOption = DEFAULT_SCHEMA,
    as_json: JsonOption = False,
) -> None:
    """Pause KIND: no new attempt starts anywhere; running ones finish; pushes still work."""
    with operator_queue(dsn, schema) as queue:
        queue.pause_kind(kind)
    if as_json:
        _print_json({"kind": kind, "paused": True})
    else:
        typer.echo(f"paused {kind!r}")


@kinds_app.command("resume")
def resume_kind(
    kind: Annotated[str, typer.Argument(help="Kind to resume.")],
    dsn: DsnOption,
    schema: SchemaOption = DEFAULT_SCHEMA,
    as_json: JsonOption = False,
) -> None:
    """Resume KIND: its workers claim again at once."""
    with operator_queue(dsn, schema) as queue:
        queue.resume_kind(kind)
    if as_json:
        _print_json({"kind": kind, "paused": False})
    else:
        typer.echo(f"resumed {kind!r}")


def audit(
    dsn: DsnOption,
    schema: SchemaOption = DEFAULT_SCHEMA,
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    source: Annotated[
        str | None, typer.Option(help="Only this source: api, dashboard, cli or python.")
    ] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action (cancel_task, retry_kind, …).")
    ] = None,
    before_id: Annotated[str | None, typer.Option(help="Page cursor: the last id shown.")] = None,
    limit: Annotated[int, typer.Option(help="Most entries to show (1-1000).")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The audit log of operator actions, newest first: who, from where, what, how many rows."""
    if source is not None and source not in SOURCES:
        _fail(f"--source must be one of {', '.join(SOURCES)}, got {source!r}")
    with operator_queue(dsn, schema) as queue:
        cursor = None if before_id is None else _task_id(before_id)
        entries = queue.audit_log(
            limit=limit, before_id=cursor, kind=kind, source=source, action=action
        )
    if as_json:
        _print_json([_plain(asdict(entry)) for entry in entries])
        return
    table = _table()
    for column in ("id", "at", "source", "actor", "action", "kind", "task", "rows", "detail"):
        table.add_column(column)
    for entry in entries:
        table.add_row(
            str(entry.id),
            entry.at.isoformat(timespec="seconds"),
            entry.source,
            entry.actor,
            entry.action,
            entry.kind or "",
            "" if entry.task_id is None else str(entry.task_id),
            str(entry.rows),
            json.dumps(entry.detail, ensure_ascii=False, separators=(",", ":")),
        )
    _print(table)
    if len(entries) == limit:
        typer.echo(f"next page: --before-id {entries[-1].id}")


@kinds_app.command("limit")
def limit_kind(
    kind: Annotated[str, typer.Argument(help="Kind whose limits to override fleet-wide.")],
    dsn: DsnOption,
    schema: SchemaOption = DEFAULT_SCHEMA,
    rate: Annotated[
        str | None, typer.Option(help="Rate limit: 10/s, 600/m, 5/h (burst = the count).")
    ] = None,
    burst: Annotated[int | None, typer.Option(help="Burst of the rate limit.")] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Most attempts running at once, fleet-wide.")
    ] = None,
    group_concurrency: Annotated[
        int | None, typer.Option(help="Most attempts running at once per task group.")
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Drop every override: the code's limits apply.")
    ] = False,
    actor: Annotated[str | None, typer.Option(help="Who makes the change (audit).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Override KIND's limits in every worker process within a second, until --clear."""
    from pgqueue.limits import RateLimit

    changes: dict[str, Any] = {}
    try:
        if rate is not None:
            parsed = RateLimit.parse(rate)
            changes["rate_limit"] = RateLimit(parsed.n, per=parsed.per, burst=burst)
        elif burst is not None:
            raise OperatorError("--burst needs --rate")
        if concurrency is not None:
            changes["global_concurrency"] = concurrency
        if group_concurrency is not None:
            changes["group_concurrency"] = group_concurrency
    except (PgQueueError, OperatorError) as exc:
        _fail(str(exc))
    if clear and changes:
        _fail("--clear takes no other limit")
    if not clear and not changes:
        _fail("give --rate, --concurrency or --group-concurrency, or --clear")
    if actor is None:
        actor = f"cli:{getpass.getuser()}"
    with operator_queue(dsn, schema) as queue:
        if clear:
            overrides = queue.clear_limits(kind, actor=actor)
        else:
            overrides = queue.set_limits(kind, actor=actor, **changes)
    if as_json:
        _print_json({"kind": kind, **overrides.as_dict()})
    elif not overrides.any:
        typer.echo(f"cleared the limit overrides of {kind!r}")
    else:
        info = KindInfo(kind, False, {}, limit_overrides=overrides)
        typer.echo(f"limited {kind!r}: {_limits_text(info)}")


def register(app: typer.Typer) -> None:
    """Add the operator commands to the ``pgqueue`` command."""
    app.command("status")(status)
    app.command("audit")(audit)
    app.add_typer(tasks_app, name="tasks")
    app.add_typer(kinds_app, name="kinds")
