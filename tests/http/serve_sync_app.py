"""A host app with a blocking ``Queue`` for ``pgqueue serve --workers`` (the service then
serves through an ``AsyncQueue`` of its own while the app's workers run in the process)."""

from __future__ import annotations

import os
import threading
from typing import Any

from pgqueue import KindOptions, Queue

queue = Queue(os.environ["PGQUEUE_DSN"], schema=os.environ.get("PGQUEUE_SCHEMA", "pgqueue"))


def slow(envelope: Any) -> None:
    threading.Event().wait(float((envelope.payload or {}).get("seconds", 0.2)))


queue.register_kind("slow", slow, KindOptions(attempt_timeout=30, max_attempts=1, worker_count=3))
