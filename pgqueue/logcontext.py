"""Task context on log lines: every line logged while an attempt runs carries its task.

The runtime sets :data:`current_task` for each attempt (asyncio tasks and the handler threads
inherit it), :class:`TaskContextFilter` copies it onto log records, and :class:`JsonFormatter`
writes one JSON object per line (:class:`TextFormatter` appends the context to plain lines).
:func:`configure_logging` installs both; ``pgqueue worker`` calls it
(``PGQUEUE_LOG_FORMAT=json`` for JSON lines).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
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


class TextFormatter(logging.Formatter):
    """Plain text lines; a line about a task ends with its id, kind and attempt."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        task_id = getattr(record, "task_id", None)
        if task_id is None:
            return line
        kind = getattr(record, "task_kind", None)
        attempt = getattr(record, "attempt", None)
        return f"{line} [task_id={task_id} kind={kind} attempt={attempt}]"


LOG_FORMAT_ENV = "PGQUEUE_LOG_FORMAT"


def configure_logging(level: str | int = "INFO", json_lines: bool | None = None) -> None:
    """Log to stderr with the task context on every line about a task.

    ``json_lines`` chooses one JSON object per line (:class:`JsonFormatter`); ``None`` reads
    ``$PGQUEUE_LOG_FORMAT`` (``json`` or ``text``, the default). The filter sits on the handler,
    so lines that handlers' own loggers write during an attempt carry the context too.
    """
    if json_lines is None:
        json_lines = os.environ.get(LOG_FORMAT_ENV, "text").strip().lower() == "json"
    handler = logging.StreamHandler()
    handler.addFilter(TaskContextFilter())
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    for existing in [h for h in root.handlers if getattr(h, "_pgqueue", False)]:
        root.removeHandler(existing)
    handler._pgqueue = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
