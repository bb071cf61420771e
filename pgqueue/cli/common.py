"""What the operator commands share: the DSN and schema options, a queue for one command,
one-line errors, JSON and table output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pgqueue.audit import Actor, acting_as, os_user
from pgqueue.errors import PgQueueError
from pgqueue.queue import Queue
from pgqueue.task import KindInfo, TaskInfo

DsnOption = Annotated[
    str, typer.Option(envvar="PGQUEUE_DSN", help="PostgreSQL DSN (default: $PGQUEUE_DSN).")
]

if TYPE_CHECKING:
    from rich.table import Table


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
