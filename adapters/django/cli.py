"""``pgqueue worker pgqueue.adapters.django.cli:queue``: the pgqueue command runs a Django
project's task workers (with ``DJANGO_SETTINGS_MODULE`` set; ``PGQUEUE_DJANGO_BACKEND`` names
the alias in ``TASKS``, ``default`` unless set). ``manage.py pgqueue_worker`` does the same."""

from __future__ import annotations

import os

import django

django.setup()

from .compat import task_backends  # noqa: E402
from .worker import worker_queue  # noqa: E402

queue = worker_queue(task_backends[os.environ.get("PGQUEUE_DJANGO_BACKEND", "default")])
