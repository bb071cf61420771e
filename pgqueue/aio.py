"""Small asyncio helpers the runtime and the HTTP service share."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_PERIOD = 0.1  # seconds between cancellations of a task that did not end


async def wait_event(event: asyncio.Event, seconds: float | None) -> None:
    """Wait for ``event``; ``TimeoutError`` after ``seconds`` (``None``: no bound)."""
    async with asyncio.timeout(seconds):
        await event.wait()


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended, whatever it raised.

    One ``cancel()`` is not always enough before Python 3.12: ``asyncio.wait_for`` (which
    psycopg's waits and the pool's use) returns the inner result and drops the cancellation
    when both land in the same loop iteration (CPython gh-86296). A background loop that
    loses its cancellation that way goes on to its next sleep, and a ``stop()`` gathering it
    would wait out that sleep. So a task still running is cancelled again, every
    ``RECANCEL_PERIOD`` seconds, until it ends.
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_PERIOD)
    await asyncio.gather(*tasks, return_exceptions=True)
