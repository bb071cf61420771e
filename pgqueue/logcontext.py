"""Task context on log lines: every line logged while an attempt runs carries its task.

The runtime sets :data:`current_task` for each attempt (asyncio tasks and the handler threads
inherit it), :class:`TaskContextFilter` copies it onto log records, and :class:`JsonFormatter`
writes one JSON object per line.
"""

from __future__ import annotations

import contextvars
import json
import logging
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TaskContext:
    task_id: int
    kind: str
    attempt: int


current_task: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "pgqueue_current_task", default=None
)


class TaskContextFilter(logging.Filter):
    """Adds ``task_id``, ``task_kind`` and ``attempt`` to every record (None outside a task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current_task.get()
        if context is not None:
            record.task_id = context.task_id
            record.task_kind = context.kind
            record.attempt = context.attempt
        else:
            for name in ("task_id", "task_kind", "attempt"):
                if not hasattr(record, name):
                    setattr(record, name, None)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the task context, for log pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "task_id": getattr(record, "task_id", None),
            "kind": getattr(record, "task_kind", None),
            "attempt": getattr(record, "attempt", None),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
