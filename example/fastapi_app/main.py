"""The app that ``uvicorn example.fastapi_app.main:app`` serves, configured from the environment.

Run it (after ``pgqueue migrate``) with::

    PGQUEUE_DSN=postgresql://app@db/app uvicorn example.fastapi_app.main:app

``PGQUEUE_SCHEMA`` names pgqueue's schema, ``PGQUEUE_API_TOKEN`` and ``PGQUEUE_READ_TOKEN`` guard
the API and dashboard at ``/pgqueue/`` as they do for ``pgqueue serve``,
``EXAMPLE_APP_SCHEMA`` names the schema of the app's own tables (default ``public``) and
``EXAMPLE_MAIL_SECONDS`` how long a pretend mail takes to send.
"""

from __future__ import annotations

import os

from example.fastapi_app.app import build_app
from pgqueue.logcontext import configure_logging

configure_logging(os.environ.get("EXAMPLE_LOG_LEVEL", "INFO"))

app, queue = build_app(
    os.environ.get("PGQUEUE_DSN", "postgresql:///app"),
    schema=os.environ.get("PGQUEUE_SCHEMA", "pgqueue"),
    app_schema=os.environ.get("EXAMPLE_APP_SCHEMA", "public"),
    mail_seconds=float(os.environ.get("EXAMPLE_MAIL_SECONDS", "0.2")),
)
