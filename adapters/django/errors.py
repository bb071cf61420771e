"""How a Django task's failure is recorded in pgqueue's error messages, and read back.

The worker turns an exception of a task into :class:`DjangoTaskError`, whose message (what
pgqueue stores, ``DjangoTaskError: <message>``) is the exception's class path and the worker's
id on the first line, then the formatted traceback. Errors pgqueue itself recorded (a timeout,
a lost lease) are read back as ``pgqueue.errors`` classes, or ``builtins.Exception``.
"""

from __future__ import annotations

import traceback

import pgqueue.errors

from .compat import TaskError

ERROR_PREFIX = "DjangoTaskError: "


class DjangoTaskError(Exception):
    """A Django task raised: carries what ``TaskResult.errors`` needs."""

    def __init__(self, exception_class_path: str, formatted: str, worker_id: str) -> None:
        super().__init__(f"{exception_class_path} {worker_id}\n{formatted}")
        self.exception_class_path = exception_class_path
        self.traceback = formatted
        self.worker_id = worker_id

    @classmethod
    def of(cls, error: BaseException, worker_id: str) -> DjangoTaskError:
        path = f"{type(error).__module__}.{type(error).__qualname__}"
        return cls(path, "".join(traceback.format_exception(error)), worker_id)


def parse_error(message: str) -> tuple[TaskError, str]:
    """A stored error message as Django's ``TaskError`` and the id of the worker it came
    from (``unknown`` when pgqueue recorded it)."""
    if message.startswith(ERROR_PREFIX):
        head, _, formatted = message[len(ERROR_PREFIX) :].partition("\n")
        path, _, worker = head.partition(" ")
        return TaskError(exception_class_path=path, traceback=formatted), worker or "unknown"
    name = message.partition(":")[0].strip()
    found = getattr(pgqueue.errors, name, None)
    is_error = isinstance(found, type) and issubclass(found, BaseException)
    path = f"pgqueue.errors.{name}" if is_error else "builtins.Exception"
    return TaskError(exception_class_path=path, traceback=message), "unknown"
