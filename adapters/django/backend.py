"""``PgQueueBackend``: the backend of Django's Tasks framework on pgqueue.

A Django task is a pgqueue task whose kind is its queue (``KIND_PREFIX`` + ``queue_name``,
``django.default`` by default) and whose payload names the task function and holds its
arguments. Pushes run on Django's own connection, in Django's transaction; results are the
task rows themselves (``get_result`` reads one by id).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from pgqueue.errors import InvalidTask as PgQueueInvalidTask
from pgqueue.errors import PgQueueError
from pgqueue.options import KindOptions
from pgqueue.queue import Queue
from pgqueue.store import operations
from pgqueue.store.executor import drive_sync
from pgqueue.store.queries import DEFAULT_SCHEMA, validate_schema_name
from pgqueue.task import Status, TaskInfo
from pgqueue.task import Task as PgQueueTask

from .compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    set_field,
    task_enqueued,
)
from .errors import parse_error

__all__ = ["PgQueueBackend"]

OPTION_NAMES = frozenset(
    {"DATABASE", "SCHEMA", "KIND_PREFIX", "KIND_OPTIONS", "QUEUE_OPTIONS", "TRACING"}
)
DEFAULT_KIND_PREFIX = "django."
# Django's tasks run once unless a queue's options give them more attempts.
DEFAULT_KIND_OPTIONS: dict[str, Any] = {"attempt_timeout": 300, "max_attempts": 1}
UNKNOWN_WORKER = "unknown"

STATUSES = {
    Status.NEW: TaskResultStatus.READY,
    Status.MUST_RETRY: TaskResultStatus.READY,
    Status.PROCESSING: TaskResultStatus.RUNNING,
    Status.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    Status.NO_ATTEMPTS_LEFT: TaskResultStatus.FAILED,
    Status.CANCELLED: TaskResultStatus.FAILED,
}


def normalize_json(value: Any) -> Any:
    """Django's own normaliser of task arguments and results (``TypeError`` for the rest)."""
    try:
        from django.utils.json import normalize_json as normalize  # Django 6
    except ImportError:
        from django_tasks.utils import normalize_json as normalize
    return normalize(value)


def connection_dsn(alias: str) -> str:
    """A libpq connection string of Django's database ``alias`` (from its settings, with no
    connection made)."""
    from psycopg.conninfo import make_conninfo

    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise ImproperlyConfigured(
            f"the pgqueue task backend needs a PostgreSQL database; {alias!r} is "
            f"{connection.vendor}"
        )
    params = connection.get_connection_params()
    kept: dict[str, Any] = {
        name: value
        for name, value in params.items()
        if isinstance(value, str | int) and not isinstance(value, bool) and value != ""
        if name not in ("prepare_threshold", "cursor_factory", "context")
    }
    return make_conninfo(**kept)


class PgQueueBackend(BaseTaskBackend):  # type: ignore[misc]
    """``TASKS = {"default": {"BACKEND": "pgqueue.adapters.django.PgQueueBackend",
    "QUEUES": ["default", "emails"], "OPTIONS": {...}}}``.

    ``OPTIONS``: ``DATABASE`` (Django's database alias, ``"default"``), ``SCHEMA`` (pgqueue's
    schema, ``"pgqueue"``), ``KIND_PREFIX`` (``"django."``: the queue ``emails`` is the kind
    ``django.emails``), ``KIND_OPTIONS`` (``KindOptions`` arguments for every queue, by
    default ``{"attempt_timeout": 300, "max_attempts": 1}``) and ``QUEUE_OPTIONS`` (the same
    per queue name, over ``KIND_OPTIONS``), ``TRACING`` (``"child"`` or ``"link"``: the
    workers' attempts get OpenTelemetry spans, children of or linked to the enqueuing span;
    ``None``, the default: no spans).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options: Mapping[str, Any] = self.options or {}
        unknown = sorted(set(options) - OPTION_NAMES)
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {unknown}; the pgqueue backend "
                f"knows {sorted(OPTION_NAMES)}"
            )
        self.database: str = options.get("DATABASE", "default")
        self.schema = validate_schema_name(options.get("SCHEMA", DEFAULT_SCHEMA))
        self.kind_prefix: str = options.get("KIND_PREFIX", DEFAULT_KIND_PREFIX)
        self._kind_options = {**DEFAULT_KIND_OPTIONS, **options.get("KIND_OPTIONS", {})}
        self._queue_options: dict[str, dict[str, Any]] = dict(options.get("QUEUE_OPTIONS", {}))
        for name in self._queue_options:
            if self.queues and name not in self.queues:
                raise ImproperlyConfigured(
                    f"TASKS[{alias!r}]['OPTIONS']['QUEUE_OPTIONS'] names {name!r}, which is not "
                    f"among its QUEUES {sorted(self.queues)}"
                )
        self.tracing: str | None = options.get("TRACING")
        if self.tracing not in (None, "child", "link"):
            raise ImproperlyConfigured(
                f'TASKS[{alias!r}]["OPTIONS"]["TRACING"] must be "child", "link" or None, got '
                f"{self.tracing!r}"
            )
        for name in self.queues or ():
            self.kind_options(name)  # bad options fail at start-up, not at the first push
        self._queue: Queue | None = None
        self._lock = threading.Lock()

    # -- mapping ----------------------------------------------------------------------------

    def kind(self, queue_name: str) -> str:
        """The pgqueue kind of a Django queue."""
        return f"{self.kind_prefix}{queue_name}"

    def kind_options(self, queue_name: str) -> KindOptions:
        """The ``KindOptions`` of a Django queue's kind."""
        given = {**self._kind_options, **self._queue_options.get(queue_name, {})}
        known = {f.name for f in fields(KindOptions)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ImproperlyConfigured(
                f"options of queue {queue_name!r} of TASKS[{self.alias!r}] have unknown "
                f"KindOptions fields {unknown}"
            )
        try:
            return KindOptions(**given).validate()
        except (TypeError, ValueError, PgQueueError) as exc:
            raise ImproperlyConfigured(
                f"options of queue {queue_name!r} of TASKS[{self.alias!r}]: {exc}"
            ) from exc

    @property
    def queue(self) -> Queue:
        """The pgqueue ``Queue`` of this backend (built on first use; it opens no connection
        until a worker starts or it is used on its own)."""
        with self._lock:
            if self._queue is None:
                stamps = []
                if self.tracing is not None:
                    from pgqueue.stamps import tracing_stamp

                    stamps.append(tracing_stamp(parent=self.tracing))
                queue = Queue(connection_dsn(self.database), schema=self.schema, stamps=stamps)
                for name in sorted(self.queues or ()):
                    queue.declare_kind(self.kind(name), self.kind_options(name))
                self._queue = queue
            return self._queue

    def _known_kind(self, queue_name: str) -> str:
        kind = self.kind(queue_name)
        queue = self.queue
        if kind not in queue.registry:  # QUEUES empty: any queue name goes
            with self._lock:
                if kind not in queue.registry:
                    queue.declare_kind(kind, self.kind_options(queue_name))
        return kind

    def _raw_connection(self) -> Any:
        """Django's own psycopg 3 connection of ``DATABASE`` (opened if needed)."""
        connection = connections[self.database]
        connection.ensure_connection()
        raw = connection.connection
        module = type(raw).__module__
        if not module.startswith("psycopg.") and module != "psycopg":
            raise ImproperlyConfigured(
                f"the pgqueue task backend runs on Django's PostgreSQL backend with psycopg 3; "
                f"database {self.database!r} uses {module} (pip install 'psycopg[binary]')"
            )
        return raw

    # -- enqueue ----------------------------------------------------------------------------

    def enqueue(self, task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]) -> TaskResult:
        """Push the task in Django's transaction on ``DATABASE``: inside
        ``transaction.atomic()`` it exists if and only if the block commits; outside one the
        push commits at once."""
        self.validate_task(task)
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        run_after = task.run_after
        payload = {
            "task": task.module_path,
            "args": args,
            "kwargs": kwargs,
            "queue_name": task.queue_name,
            "priority": task.priority,
            "run_after": None if run_after is None else run_after.isoformat(),
            "backend": self.alias,
        }
        pushed_task = PgQueueTask(
            self._known_kind(task.queue_name), payload, priority=int(task.priority)
        )
        delay = (
            0.0 if run_after is None else max(0.0, (run_after - _now(run_after)).total_seconds())
        )
        from pgqueue.adapters.transactions import run_in_sync

        try:
            op = operations.push_tasks_returning_times(
                self.queue.registry, self.queue.queries, [pushed_task], delay
            )
        except PgQueueInvalidTask as exc:
            raise InvalidTask(str(exc)) from exc
        with transaction.atomic(using=self.database, savepoint=False):
            pushed = run_in_sync(self._raw_connection(), op)
        task_id = pushed.ids[0]
        assert task_id is not None  # keyless: never a duplicate
        result = TaskResult(
            task=task,
            id=str(task_id),
            status=TaskResultStatus.READY,
            enqueued_at=pushed.created_at,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    # -- results ----------------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult:
        """The task's result as stored now; ``TaskResultDoesNotExist`` when no task of this
        backend has that id (read on Django's connection, so in its transaction)."""
        try:
            task_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        if not 0 < task_id < 2**63:
            raise TaskResultDoesNotExist(result_id)
        from pgqueue.adapters.psycopg import sync_fetcher

        op = operations.get_task(self.queue.queries, task_id)
        info = drive_sync(op, sync_fetcher(self._raw_connection()))
        if info is None or not self._owns(info):
            raise TaskResultDoesNotExist(result_id)
        return self.result_of(info)

    def _owns(self, info: TaskInfo) -> bool:
        payload = info.payload
        return (
            info.kind.startswith(self.kind_prefix)
            and isinstance(payload, dict)
            and isinstance(payload.get("task"), str)
            and payload.get("backend", self.alias) == self.alias
        )

    def task_of(self, payload: Mapping[str, Any]) -> Task:
        """The Django task a payload names, with the priority, queue and ``run_after`` it was
        enqueued with."""
        path = payload["task"]
        found = import_string(path)
        if not isinstance(found, Task):
            raise InvalidTask(f"{path!r} is not a Django task (decorate it with @task)")
        run_after = payload.get("run_after")
        changes: dict[str, Any] = {}
        if payload.get("priority", found.priority) != found.priority:
            changes["priority"] = payload["priority"]
        if payload.get("queue_name", found.queue_name) != found.queue_name:
            changes["queue_name"] = payload["queue_name"]
        if run_after is not None:
            changes["run_after"] = datetime.fromisoformat(run_after)
        if found.backend != self.alias:
            changes["backend"] = self.alias
        return found.using(**changes) if changes else found

    def result_of(self, info: TaskInfo) -> TaskResult:
        """A stored task as Django's ``TaskResult``."""
        payload = info.payload
        errors: list[TaskError] = []
        workers: list[str] = []
        for message in info.messages:
            error, worker = parse_error(message)
            errors.append(error)
            workers.append(worker)
        stored = info.result if isinstance(info.result, dict) else {}
        status = STATUSES[info.status]
        if status is TaskResultStatus.SUCCESSFUL:
            workers.append(str(stored.get("worker_id", UNKNOWN_WORKER)))
        # One worker id per attempt: those the records kept, the older ones unknown.
        missing = info.attempts_elapsed - len(workers)
        if missing > 0:
            workers = [UNKNOWN_WORKER] * missing + workers
        result = TaskResult(
            task=self.task_of(payload),
            id=str(info.id),
            status=status,
            enqueued_at=info.created_at,
            started_at=info.started_at,
            last_attempted_at=info.started_at,
            # pgqueue stamps finished_at on successes and cancellations; an exhausted task
            # ended with its last write.
            finished_at=(info.finished_at or info.updated_at) if status in _ENDED else None,
            args=payload.get("args", []),
            kwargs=payload.get("kwargs", {}),
            backend=self.alias,
            errors=errors,
            worker_ids=workers,
        )
        if status is TaskResultStatus.SUCCESSFUL:
            set_field(result, "_return_value", stored.get("return_value"))
        return result

    # -- checks -----------------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        from django.apps import apps

        messages: list[checks.CheckMessage] = list(super().check(**kwargs))
        if self.database not in connections.settings:
            messages.append(
                checks.Error(
                    f"TASKS[{self.alias!r}] names the database {self.database!r}, which is not "
                    "in DATABASES",
                    id="pgqueue.E001",
                )
            )
        elif connections[self.database].vendor != "postgresql":
            messages.append(
                checks.Error(
                    f"the pgqueue task backend needs PostgreSQL; database {self.database!r} is "
                    f"{connections[self.database].vendor}",
                    id="pgqueue.E002",
                )
            )
        if not apps.is_installed("pgqueue.adapters.django"):
            messages.append(
                checks.Warning(
                    "pgqueue.adapters.django is not in INSTALLED_APPS",
                    hint="add it: `manage.py migrate` then creates pgqueue's tables and "
                    "`manage.py pgqueue_worker` runs the tasks",
                    id="pgqueue.W001",
                )
            )
        return messages


_ENDED = (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)


def _now(like: datetime) -> datetime:
    """Now, aware or naive as ``like`` is (``validate_task`` wants aware ones under
    ``USE_TZ``)."""
    return timezone.now() if timezone.is_aware(like) else datetime.now()
