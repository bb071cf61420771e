"""The ``pgqueue`` command: run workers, manage the schema."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from pgqueue import migrate as migrations
from pgqueue import operator_cli
from pgqueue.async_queue import AsyncQueue
from pgqueue.logcontext import configure_logging
from pgqueue.queries import DEFAULT_SCHEMA
from pgqueue.queue import Queue
from pgqueue.runtime import StopMode

app = typer.Typer(help="pgqueue: a durable task queue on PostgreSQL.", no_args_is_help=True)
migrations_app = typer.Typer(help="Work with pgqueue's Alembic revisions.", no_args_is_help=True)
app.add_typer(migrations_app, name="migrations")
operator_cli.register(app)

log = logging.getLogger("pgqueue.cli")

DsnOption = Annotated[
    str, typer.Option(envvar="PGQUEUE_DSN", help="PostgreSQL DSN (default: $PGQUEUE_DSN).")
]
SchemaOption = Annotated[
    str, typer.Option(envvar="PGQUEUE_SCHEMA", help="Schema holding pgqueue's tables.")
]


def load_queue(target: str) -> Queue | AsyncQueue:
    """Import ``module:attribute`` (or ``module`` with a ``queue`` attribute); return the queue."""
    module_name, _, attribute = target.partition(":")
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in (attribute or "queue").split("."):
        obj = getattr(obj, part)
    if callable(obj) and not isinstance(obj, (Queue, AsyncQueue)):
        obj = obj()
    if not isinstance(obj, (Queue, AsyncQueue)):
        raise typer.BadParameter(f"{target} is a {type(obj).__name__}, not a Queue or AsyncQueue")
    return obj


SIGNAL_CHECK_SECONDS = 1.0


def _drain_bound(queue: Queue | AsyncQueue) -> float:
    margin = max((s.options.loop.lease_margin for s in queue.registry), default=10.0)
    return queue.longest_attempt_timeout() + margin


def run_sync_worker(queue: Queue) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    queue.start()
    log.info("worker started (kinds: %s)", ", ".join(s.kind for s in queue.registry.handled()))
    # Python runs signal handlers in the main thread, but the kernel may deliver the signal to
    # any of the queue's threads, and then nothing interrupts a wait that has no timeout. A
    # bounded wait lets the main thread run the pending handler within a second.
    while not stop.wait(SIGNAL_CHECK_SECONDS):
        pass
    log.info("stopping: draining in-flight tasks")
    closer = threading.Thread(target=queue.close, daemon=True)
    closer.start()
    closer.join(_drain_bound(queue))
    if closer.is_alive():
        log.error("drain did not finish in time; tasks still running return after their lease")
        raise typer.Exit(1)
    log.info("stopped")


async def run_async_worker(queue: AsyncQueue) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await queue.start()
    log.info("worker started (kinds: %s)", ", ".join(s.kind for s in queue.registry.handled()))
    await stop.wait()
    log.info("stopping: draining in-flight tasks")
    try:
        await asyncio.wait_for(queue.close(), _drain_bound(queue))
    except TimeoutError:
        log.error("drain did not finish in time; aborting the rest")
        await queue.close(StopMode.ABORT)
    log.info("stopped")


@app.command()
def worker(
    target: Annotated[str, typer.Argument(help="module:attribute of a Queue or AsyncQueue.")],
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics on this port (/metrics; host from "
            "$PGQUEUE_METRICS_HOST, default 127.0.0.1).",
            min=0,
            max=65535,
        ),
    ] = None,
) -> None:
    """Run a queue's workers until SIGTERM/SIGINT, then drain in-flight tasks and exit."""
    configure_logging(log_level)  # task id, kind and attempt on task lines; JSON on request
    queue = load_queue(target)
    metrics_server = None
    if metrics_port is not None:
        from pgqueue.metrics import serve

        metrics_server = serve(queue, metrics_port)
        log.info("metrics on http://%s:%d/metrics", metrics_server.host, metrics_server.port)
    try:
        if isinstance(queue, AsyncQueue):
            asyncio.run(run_async_worker(queue))
        else:
            run_sync_worker(queue)
    finally:
        if metrics_server is not None:
            metrics_server.close()


@app.command()
def migrate(
    dsn: DsnOption,
    schema: SchemaOption = DEFAULT_SCHEMA,
    down: Annotated[bool, typer.Option("--down", help="Downgrade instead of upgrade.")] = False,
    revision: Annotated[
        str | None, typer.Option(help="Target revision (default: head, or base with --down).")
    ] = None,
) -> None:
    """Apply pgqueue's migrations to the database (or revert them with --down)."""
    if down:
        migrations.downgrade(dsn, schema, revision or "pgqueue@base")
    else:
        migrations.upgrade(dsn, schema, revision or "pgqueue@head")
    typer.echo(f"pgqueue schema {schema!r} at {migrations.current(dsn, schema) or 'base'}")


@app.command()
def sql(schema: SchemaOption = DEFAULT_SCHEMA) -> None:
    """Print the schema as plain DDL."""
    typer.echo(migrations.plain_sql(schema))


@migrations_app.command("copy")
def copy_revisions(
    into: Annotated[Path, typer.Option("--into", help="Your Alembic versions directory.")],
) -> None:
    """Copy pgqueue's revisions (branch label 'pgqueue') into your Alembic project."""
    for path in migrations.copy_migrations(into):
        typer.echo(f"copied {path}")
    typer.echo("now run: alembic upgrade heads")


from pgqueue.http.cli import register as register_http  # noqa: E402

register_http(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
