"""The ``pgqueue kinds`` commands (list, pause, resume, limit) and ``pgqueue audit``."""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict
from typing import Annotated, Any

import typer

from pgqueue.audit import SOURCES
from pgqueue.cli.common import (
    DsnOption,
    JsonOption,
    OperatorError,
    SchemaOption,
    _fail,
    _kind_dict,
    _lag,
    _limits_text,
    _plain,
    _print,
    _print_json,
    _table,
    _task_id,
    operator_queue,
)
from pgqueue.errors import PgQueueError
from pgqueue.store.queries import DEFAULT_SCHEMA
from pgqueue.task import KindInfo

kinds_app = typer.Typer(help="List, pause, resume and limit kinds.", no_args_is_help=True)


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
    for column in ("kind", "paused", "paused since", "open", "blocked", "lag", "limits"):
        table.add_column(column)
    for kind in kinds:
        open_tasks = sum(kind.counts[s] for s in ("new", "must_retry", "processing"))
        table.add_row(
            kind.kind,
            "yes" if kind.paused else "",
            kind.paused_at.isoformat(timespec="seconds") if kind.paused_at else "",
            str(open_tasks),
            str(kind.counts["blocked"]),
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
    group_rate: Annotated[
        str | None, typer.Option(help="Rate limit per task group: 5/m (burst = the count).")
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
        if group_rate is not None:
            changes["group_rate_limit"] = RateLimit.parse(group_rate)
    except (PgQueueError, OperatorError) as exc:
        _fail(str(exc))
    if clear and changes:
        _fail("--clear takes no other limit")
    if not clear and not changes:
        _fail("give --rate, --concurrency, --group-concurrency or --group-rate, or --clear")
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
