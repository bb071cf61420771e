"""Django: a backend of Django's Tasks framework on pgqueue (extra ``django``).

```python
INSTALLED_APPS = [..., "pgqueue.adapters.django"]
TASKS = {
    "default": {
        "BACKEND": "pgqueue.adapters.django.PgQueueBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"QUEUE_OPTIONS": {"emails": {"max_attempts": 5}}},
    }
}
```

``manage.py migrate`` applies pgqueue's schema; ``manage.py pgqueue_worker`` runs the tasks.
Django 6's ``django.tasks`` or, on Django 5.2, the ``django-tasks`` package.
"""

from __future__ import annotations

from .backend import PgQueueBackend

__all__ = ["PgQueueBackend"]
