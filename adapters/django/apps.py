"""The Django app of pgqueue: its migration applies pgqueue's schema, and it brings the
``pgqueue_worker`` management command."""

from __future__ import annotations

from django.apps import AppConfig


class PgQueueConfig(AppConfig):  # type: ignore[misc]
    name = "pgqueue.adapters.django"
    label = "pgqueue"
    verbose_name = "pgqueue"
