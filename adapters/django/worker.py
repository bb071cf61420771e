"""The worker side: a pgqueue ``Queue`` whose kinds are a backend's queues, with the handler
that runs the Django task a payload names."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from pgqueue.envelope import Envelope
from pgqueue.queue import Queue

from .backend import UNKNOWN_WORKER, PgQueueBackend, normalize_json
from .compat import (
    TaskContext,
    TaskResult,
    TaskResultStatus,
    set_field,
    task_finished,
    task_started,
)
from .errors import DjangoTaskError

WORKER_ID = f"{socket.gethostname()[:50]}:{os.getpid()}"


def worker_queue(backend: PgQueueBackend, queue_names: Iterable[str] | None = None) -> Queue:
    """``backend``'s ``Queue`` with a handler for each of ``queue_names`` (default: every
    queue of its ``QUEUES``)."""
    names = sorted(set(queue_names) if queue_names else backend.queues)
    if not names:
        raise ValueError(
            f"TASKS[{backend.alias!r}] accepts any queue name (QUEUES is empty): name the "
            "queues to work on"
        )
    unknown = [name for name in names if backend.queues and name not in backend.queues]
    if unknown:
        raise ValueError(
            f"queues {unknown} are not among the QUEUES of TASKS[{backend.alias!r}]: "
            f"{sorted(backend.queues)}"
        )
    queue = backend.queue
    for name in names:
        queue.register_kind(backend.kind(name), handler(backend), backend.kind_options(name))
    return queue


def handler(backend: PgQueueBackend) -> Any:
    """The handler of a Django queue's kind: runs the task (a sync handler, on pgqueue's
    thread pool; an ``async def`` task runs through ``async_to_sync``) and returns its result
    with the worker's id; an exception becomes a :class:`DjangoTaskError`."""

    def run(envelope: Envelope) -> dict[str, Any]:
        payload = envelope.payload
        try:
            task = backend.task_of(payload)
        except Exception as exc:  # the task's module path no longer imports
            raise DjangoTaskError.of(exc, WORKER_ID) from exc
        started = timezone.now()
        result = TaskResult(
            task=task,
            id=str(envelope.id),
            status=TaskResultStatus.RUNNING,
            enqueued_at=None,
            started_at=started,
            last_attempted_at=started,
            finished_at=None,
            args=payload.get("args", []),
            kwargs=payload.get("kwargs", {}),
            backend=backend.alias,
            errors=[],
            worker_ids=[UNKNOWN_WORKER] * (envelope.attempt - 1) + [WORKER_ID],
        )
        close_old_connections()
        task_started.send(type(backend), task_result=result)
        try:
            if task.takes_context:
                value = task.call(TaskContext(task_result=result), *result.args, **result.kwargs)
            else:
                value = task.call(*result.args, **result.kwargs)
            value = normalize_json(value)
        except Exception as exc:
            set_field(result, "status", TaskResultStatus.FAILED)
            set_field(result, "finished_at", timezone.now())
            task_finished.send(type(backend), task_result=result)
            raise DjangoTaskError.of(exc, WORKER_ID) from exc
        finally:
            close_old_connections()
        set_field(result, "status", TaskResultStatus.SUCCESSFUL)
        set_field(result, "finished_at", timezone.now())
        set_field(result, "_return_value", value)
        task_finished.send(type(backend), task_result=result)
        return {"return_value": value, "worker_id": WORKER_ID}

    return run
