"""Django's Tasks framework wherever it lives: ``django.tasks`` (Django 6), else the
``django-tasks`` package (its backport for Django 5.2). Everything else imports it from here."""

from __future__ import annotations

from typing import Any

try:
    from django.tasks import task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started

    FRAMEWORK = "django.tasks"
except ImportError:  # Django 5.2: the backport
    try:
        from django_tasks import task_backends  # type: ignore[no-redef,unused-ignore]
        from django_tasks.backends.base import BaseTaskBackend  # type: ignore[no-redef,unused-ignore]
        from django_tasks.base import (  # type: ignore[no-redef,assignment,unused-ignore]
            Task,
            TaskContext,
            TaskError,
            TaskResult,
            TaskResultStatus,
        )
        from django_tasks.exceptions import (  # type: ignore[no-redef,assignment,unused-ignore]
            InvalidTaskError as InvalidTask,
        )
        from django_tasks.exceptions import (  # type: ignore[no-redef,assignment,unused-ignore]
            TaskResultDoesNotExist,
        )
        from django_tasks.signals import (  # type: ignore[no-redef,assignment,unused-ignore]
            task_enqueued,
            task_finished,
            task_started,
        )
    except ImportError as exc:
        raise ImportError(
            "pgqueue.adapters.django needs Django's Tasks framework: Django 6, or Django 5.2 "
            "with the django-tasks package (pip install 'pgqueue-tasks[django]')"
        ) from exc
    FRAMEWORK = "django_tasks"

__all__ = [
    "FRAMEWORK",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "set_field",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]


def set_field(obj: Any, name: str, value: Any) -> None:
    """Set a field of a frozen dataclass of the framework (``TaskResult`` is one)."""
    object.__setattr__(obj, name, value)
