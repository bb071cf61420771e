"""The host app that ``pgqueue serve --app/--workers`` loads in the HTTP tests.

Configured from ``PGQUEUE_DSN`` and ``PGQUEUE_SCHEMA``. Kinds:
``email`` (declared only), ``capped`` (max_pending=2), ``flaky`` (handled: always fails, one
attempt, so its tasks end in ``no_attempts_left``), ``slow`` (handled: waits for its payload's
seconds, for cancel and drain tests) and ``default`` (declared, for the seed's requests).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pgqueue import AsyncQueue, KindOptions

queue = AsyncQueue(os.environ["PGQUEUE_DSN"], schema=os.environ.get("PGQUEUE_SCHEMA", "pgqueue"))
queue.declare_kind("default", KindOptions(attempt_timeout=30, max_attempts=4))
queue.declare_kind("email", KindOptions(attempt_timeout=30, max_attempts=5))
queue.declare_kind("capped", KindOptions(attempt_timeout=30, max_pending=2))


async def flaky(envelope: Any) -> None:
    raise RuntimeError("flaky always fails")


async def slow(envelope: Any) -> None:
    await asyncio.sleep(float((envelope.payload or {}).get("seconds", 0.2)))


queue.register_kind("flaky", flaky, KindOptions(attempt_timeout=5, max_attempts=1))
queue.register_kind("slow", slow, KindOptions(attempt_timeout=10, max_attempts=1))
