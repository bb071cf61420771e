"""The ``pgqueue`` command: run workers, manage the schema."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from pgqueue import migrate as migrations
from pgqueue.async_queue import AsyncQueue
from pgqueue.cli import operator as operator_cli
from pgqueue.cli.exiting import exit_now_if_handlers_hang
from pgqueue.cli.loading import load_queue
from pgqueue.errors import PgQueueError
from pgqueue.logcontext import configure_logging
from pgqueue.queue import Queue
from pgqueue.runtime import StopMode
from pgqueue.store.queries import DEFAULT_SCHEMA

app = typer.Typer(
    help="pgqueue: a durable task queue on PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
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


DEBUG_ENV = "PGQUEUE_DEBUG"


@app.callback()
def global_options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", envvar=DEBUG_ENV, help="On an error, print the full traceback too."
        ),
    ] = False,
) -> None:
    """pgqueue: a durable task queue on PostgreSQL."""
    # main() reads --debug from the command line itself (errors can happen before this runs).


SIGNAL_CHECK_SECONDS = 1.0


def _drain_bound(queue: Queue | AsyncQueue) -> float:
    margin = max((s.options.loop.lease_margin for s in queue.registry), default=10.0)
    return queue.longest_attempt_timeout() + margin


def run_sync_worker(queue: Queue) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        queue.start()
    except BaseException:
        queue.close(StopMode.ABORT)  # release the connections before the error is reported
        raise
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
    try:
        await queue.start()
    except BaseException:
        await queue.close(StopMode.ABORT)
        raise
    log.info("worker started (kinds: %s)", ", ".join(s.kind for s in queue.registry.handled()))
    await stop.wait()
    log.info("stopping: draining in-flight tasks")
    # Never cancel the drain (a cancelled stop forgets its runtime, and an ABORT after it would
    # find nothing to abort): when it takes too long, escalate it to an abort instead.
    draining = asyncio.ensure_future(queue.stop())
    done, _ = await asyncio.wait({draining}, timeout=_drain_bound(queue))
    if not done:
        log.error("drain did not finish in time; aborting the rest")
        await queue.stop(StopMode.ABORT)
        await draining
    await queue.close()
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
    code = 0
    try:
        if isinstance(queue, AsyncQueue):
            asyncio.run(run_async_worker(queue))
        else:
            run_sync_worker(queue)
    except typer.Exit as exc:
        code = exc.exit_code
        raise
    finally:
        if metrics_server is not None:
            metrics_server.close()
        exit_now_if_handlers_hang(code or 1)


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
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite revision files that differ.")
    ] = False,
) -> None:
    """Copy pgqueue's revisions (branch label 'pgqueue') into your Alembic project."""
    for path in migrations.copy_migrations(into, force=force):
        typer.echo(f"copied {path}")
    typer.echo(
        "now run: alembic upgrade heads (your history now has two heads: give autogenerate "
        "yours, alembic revision --autogenerate --head <your head> -m ...)"
    )


from pgqueue.cli.serve import register as register_http  # noqa: E402

register_http(app)


def _is_usage_error(exc: BaseException) -> bool:
    # Typer raises click's exceptions (or those of the click copy it ships): recognised by
    # shape, so the command works with either.
    return callable(getattr(exc, "format_message", None)) and hasattr(exc, "exit_code")


def error_line(exc: BaseException) -> str:
    """One line for the terminal: what went wrong, and for unexpected errors their type."""
    if _is_usage_error(exc):
        message = exc.format_message()  # type: ignore[attr-defined]
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            message += f" (see: {ctx.command_path} --help)"
    else:
        message = str(exc)
        expected = isinstance(exc, (PgQueueError, ImportError, OSError)) or type(
            exc
        ).__module__.split(".")[0] in ("psycopg", "psycopg_pool", "asyncpg", "sqlalchemy")
        if not expected or not message:
            message = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return "pgqueue: error: " + " ".join(message.split())


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``pgqueue`` command; an error prints one line on stderr and exits non-zero
    (1, or 2 for a usage error), with the full traceback only under ``--debug``.

    Every command registered on :data:`app`, from any module, gets this handling.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0", "false")
    try:
        code = app(args=args, prog_name="pgqueue", standalone_mode=False)
    except typer.Abort:
        typer.echo("pgqueue: aborted", err=True)
        code = 1
    except Exception as exc:  # noqa: BLE001 - the one place every command error ends up
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # type: ignore[attr-defined]
            code = 0
        else:
            if debug:
                traceback.print_exception(exc)
            typer.echo(error_line(exc), err=True)
            code = getattr(exc, "exit_code", 1) if _is_usage_error(exc) else 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
