"""The queue the chaos suite runs with ``pgqueue worker`` in subprocesses.

Every attempt appends ``start``/``end`` lines (task id, attempt, wall-clock time) to this
process's own file in ``RUN_LOG_DIR``, so the test can find overlapping attempts across
processes, and attempts run beyond those the database recorded. Configured by environment:
``PGQUEUE_DSN``, ``PGQUEUE_SCHEMA``, ``HANDLER``, ``TIMEOUT``, ``LEASE``, ``WORK``, ``WORKERS``,
``MAX_ATTEMPTS``, ``FLAVOUR`` (``sync``: a ``Queue``; ``async``: an ``AsyncQueue``),
``POOL_DSN`` (an async flavour's pool goes there, through PgBouncer; LISTEN stays direct).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from pgqueue import AsyncQueue, KindOptions, LoopOptions, Queue

ENV = os.environ
HANDLER = ENV.get("HANDLER", "quick")
TIMEOUT = float(ENV.get("TIMEOUT", "5"))
WORK = float(ENV.get("WORK", "0.01"))
LOG = (Path(ENV.get("RUN_LOG_DIR", ".")) / f"runs-{os.getpid()}.log").open("a", buffering=1)


def mark(what: str, envelope: Any) -> None:
    LOG.write(f"{what} {envelope.id} {envelope.attempt} {time.time():.6f}\n")


def quick(envelope: Any) -> None:
    mark("start", envelope)
    try:
        if envelope.payload == "poison":
            os._exit(3)  # the handler kills its own process
        if envelope.payload == "poison-thread":
            raise SystemExit("the handler ends its own thread")
        time.sleep(WORK)
    finally:
        mark("end", envelope)


def overrun_sync(envelope: Any) -> None:
    """Ignores its deadline: runs four timeouts long on its thread, every attempt.

    A ``probe`` task (the harness's liveness check after the chaos) returns at once.
    """
    mark("start", envelope)
    try:
        time.sleep(0 if envelope.payload == "probe" else 4 * TIMEOUT)
    finally:
        mark("end", envelope)


async def overrun_async(envelope: Any) -> None:
    """Swallows the cancellation at its deadline and keeps running four timeouts long.

    A ``probe`` task returns at once.
    """
    mark("start", envelope)
    try:
        end = time.monotonic() + (0 if envelope.payload == "probe" else 4 * TIMEOUT)
        while (left := end - time.monotonic()) > 0:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(left)
    finally:
        mark("end", envelope)


def long(envelope: Any) -> None:
    """Runs WORK seconds, far longer than the lease (the heartbeat keeps the claim)."""
    mark("start", envelope)
    try:
        time.sleep(WORK)
    finally:
        mark("end", envelope)


HANDLERS = {"quick": quick, "overrun_sync": overrun_sync, "overrun_async": overrun_async,
            "long": long}  # fmt: skip

options = KindOptions(
    attempt_timeout=TIMEOUT,
    worker_count=int(ENV.get("WORKERS", "4")),
    max_attempts=int(ENV.get("MAX_ATTEMPTS", "10")),
    terminal_tasks_ttl=3600,
    loop=LoopOptions(
        poll_period=float(ENV.get("POLL", "0.5")),
        lease_margin=float(ENV.get("LEASE", "2")),
        max_db_retry_delay=1.0,
    ),
)
queue: Queue | AsyncQueue
if ENV.get("FLAVOUR", "sync") == "sync":
    queue = Queue(ENV["PGQUEUE_DSN"], schema=ENV["PGQUEUE_SCHEMA"])
else:
    from psycopg_pool import AsyncConnectionPool

    from pgqueue.adapters.psycopg import AsyncPsycopgExecutor

    pool_dsn = ENV.get("POOL_DSN", ENV["PGQUEUE_DSN"])
    pool = AsyncConnectionPool(
        pool_dsn,
        min_size=1,
        max_size=4,
        open=False,
        # PgBouncer in transaction mode keeps no prepared statements between transactions.
        kwargs={"autocommit": True, "prepare_threshold": None},
    )
    executor = AsyncPsycopgExecutor(pool, listen_dsn=ENV["PGQUEUE_DSN"])
    queue = AsyncQueue(executor, schema=ENV["PGQUEUE_SCHEMA"])
queue.register_kind("k", HANDLERS[HANDLER], options)
