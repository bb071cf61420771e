"""``manage.py pgqueue_worker``: run the tasks of a pgqueue backend's queues until SIGTERM or
SIGINT, then drain (as ``pgqueue worker`` does)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgqueue.adapters.django.backend import PgQueueBackend
from pgqueue.adapters.django.compat import task_backends


class Command(BaseCommand):  # type: ignore[misc]
    help = "Run the workers of a pgqueue task backend until SIGTERM/SIGINT, then drain."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--backend", default="default", help="The alias in TASKS (default: default)."
        )
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            default=[],
            help="A queue to work on (repeatable; default: every queue of the backend).",
        )
        parser.add_argument("--log-level", default="INFO", help="Logging level.")

    def handle(self, *args: Any, **options: Any) -> None:
        import typer

        from pgqueue.adapters.django.worker import worker_queue
        from pgqueue.cli.exiting import exit_now_if_handlers_hang
        from pgqueue.cli.main import run_sync_worker
        from pgqueue.logcontext import configure_logging

        try:
            backend = task_backends[options["backend"]]
        except Exception as exc:
            raise CommandError(f"no task backend {options['backend']!r} in TASKS: {exc}") from exc
        if not isinstance(backend, PgQueueBackend):
            raise CommandError(
                f"TASKS[{options['backend']!r}] is {type(backend).__name__}, not the pgqueue "
                "backend (pgqueue.adapters.django.PgQueueBackend)"
            )
        try:
            queue = worker_queue(backend, options["queues"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        configure_logging(options["log_level"])
        code = 0
        try:
            run_sync_worker(queue)
        except typer.Exit as exc:  # the drain did not finish in time
            code = exc.exit_code
            raise SystemExit(code) from None
        finally:
            exit_now_if_handlers_hang(code or 1)
