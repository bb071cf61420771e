"""The queue the acceptance tests run with ``pgqueue worker`` in subprocesses.

Configured from the environment: ``PGQUEUE_DSN``, ``PGQUEUE_SCHEMA``, ``RUN_LOG_DIR`` (each
process appends the ids it ran to its own file there), ``MODE``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pgqueue import KindOptions, LoopOptions, Queue
from pgqueue.events import KindPaused

MODE = os.environ.get("MODE", "count")
LOG_DIR = Path(os.environ.get("RUN_LOG_DIR", "."))
_log = (LOG_DIR / f"ran-{os.getpid()}.log").open("a", buffering=1)


def record(envelope: Any) -> None:
    _log.write(f"{envelope.id} {envelope.attempt}\n")


def count(envelope: Any) -> None:
    record(envelope)


async def count_async(envelope: Any) -> None:
    record(envelope)


def paced(envelope: Any) -> None:
    """Record the start time, run a while (so attempts are in flight when a pause lands)."""
    _log.write(f"{envelope.id} {envelope.attempt} start {time.time()!r}\n")
    time.sleep(0.2)
    _log.write(f"{envelope.id} {envelope.attempt} end {time.time()!r}\n")


def record_pause(event: Any) -> None:
    """Write when this process obeyed a pause or resume of its kind."""
    if isinstance(event, KindPaused):
        state = "paused" if event.paused else "resumed"
        _log.write(f"{event.kind} {event.released} {state} {time.time()!r}\n")


def hang_once(envelope: Any) -> None:
    """First attempt: say so, then hang (the test kills the process). Later ones succeed."""
    record(envelope)
    if envelope.attempt == 1:
        (LOG_DIR / "started").write_text(str(envelope.id))
        time.sleep(600)


queue = Queue(os.environ["PGQUEUE_DSN"], schema=os.environ["PGQUEUE_SCHEMA"])
loop = LoopOptions(poll_period=0.5, lease_margin=float(os.environ.get("LEASE_MARGIN", "10")))
if MODE == "count":
    queue.register_kind("alpha", count, KindOptions(attempt_timeout=30, worker_count=10, loop=loop))
    queue.register_kind(
        "beta", count_async, KindOptions(attempt_timeout=30, worker_count=10, loop=loop)
    )
elif MODE == "crash":
    queue.register_kind(
        "fragile",
        hang_once,
        KindOptions(attempt_timeout=2, worker_count=2, max_attempts=3, loop=loop),
    )
elif MODE == "periodic":
    queue.register_kind("tick", count, KindOptions(attempt_timeout=1, worker_count=2, loop=loop))
    queue.add_periodic("tick", every=1, payload={"source": "schedule"})
elif MODE == "pause":
    queue.register_kind(
        "paced",
        paced,
        KindOptions(
            attempt_timeout=10,
            worker_count=3,
            loop=LoopOptions(poll_period=0.5, prefetch=6, lease_margin=10),
        ),
    )
    queue.subscribe(record_pause)
