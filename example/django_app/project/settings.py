"""Settings of the example project: pgqueue as the backend of Django's Tasks framework.

The database comes from ``PGQUEUE_DSN`` (a libpq URL, PostgreSQL with psycopg 3), pgqueue's
schema from ``PGQUEUE_SCHEMA`` (``pgqueue`` unless set).
"""

import os

from psycopg.conninfo import conninfo_to_dict

DSN = os.environ.get("PGQUEUE_DSN", "postgresql://postgres@127.0.0.1:5432/pgqueue_django_example")
_db = conninfo_to_dict(DSN)

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "project.urls"

INSTALLED_APPS = ["pgqueue.adapters.django", "shop"]
try:
    import django.tasks  # noqa: F401  (Django 6)
except ImportError:  # Django 5.2: the django-tasks backport
    INSTALLED_APPS.insert(0, "django_tasks")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", ""),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
    }
}

TASKS = {
    "default": {
        "BACKEND": "pgqueue.adapters.django.PgQueueBackend",
        # Each queue is a pgqueue kind: "default" is django.default, "ordered" django.ordered.
        "QUEUES": ["default", "ordered"],
        "OPTIONS": {
            "SCHEMA": os.environ.get("PGQUEUE_SCHEMA", "pgqueue"),
            "KIND_OPTIONS": {"attempt_timeout": 60},
            # One task at a time on "ordered": the order they run in is the priority order.
            "QUEUE_OPTIONS": {"ordered": {"worker_count": 1}},
        },
    }
}

MIDDLEWARE: list[str] = []
TEMPLATES: list[dict[str, object]] = []
