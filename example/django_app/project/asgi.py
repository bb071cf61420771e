"""The project over ASGI, with pgqueue's REST API and dashboard under ``/pgqueue``:
``uvicorn project.asgi:app`` (from this folder). The same ``PGQUEUE_API_TOKEN`` /
``PGQUEUE_READ_TOKEN`` as ``pgqueue serve`` guard them. Workers run apart, in
``manage.py pgqueue_worker``.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from django.core.asgi import get_asgi_application

django_app = get_asgi_application()

from fastapi import FastAPI  # noqa: E402

from pgqueue import AsyncQueue  # noqa: E402
from pgqueue.adapters.django.backend import connection_dsn  # noqa: E402
from pgqueue.adapters.django.compat import task_backends  # noqa: E402
from pgqueue.adapters.fastapi import lifespan, mount  # noqa: E402

backend = task_backends["default"]
queue = AsyncQueue(connection_dsn(backend.database), schema=backend.schema)
app = FastAPI(lifespan=lifespan(queue, workers=False))
mount(app, queue, "/pgqueue")
app.mount("/", django_app)  # everything else is Django's
