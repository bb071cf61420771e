"""The queue the flow-control acceptance tests run with ``pgqueue worker`` in subprocesses.

Configured from the environment: ``PGQUEUE_DSN``, ``PGQUEUE_SCHEMA``, ``MODE`` (which kind and
limits), ``WORKERS`` (worker_count) and ``HOLD`` (seconds each attempt sleeps). Every attempt
records its start and end, on the database clock, in ``<schema>.runs``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from pgqueue import KindOptions, LoopOptions, Queue, RateLimit

MODE = os.environ.get("MODE", "priority")
SCHEMA = os.environ["PGQUEUE_SCHEMA"]
WORKERS = int(os.environ.get("WORKERS", "4"))
HOLD = float(os.environ.get("HOLD", "0"))
RUNS_DDL = f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.runs (
    task_id bigint NOT NULL, pid int NOT NULL, task_group text,
    started_at timestamptz NOT NULL, ended_at timestamptz)"""

pool = ConnectionPool(
    os.environ["PGQUEUE_DSN"], min_size=1, max_size=WORKERS, kwargs={"autocommit": True}, open=True
)


def run(envelope: Any) -> None:
    """Record the start, hold the slot a while, record the end (one row per attempt)."""
    with pool.connection() as conn:
        conn.execute(
            f"INSERT INTO {SCHEMA}.runs (task_id, pid, task_group, started_at)"
            " VALUES (%s, %s, %s, clock_timestamp())",
            (envelope.id, os.getpid(), (envelope.payload or {}).get("group")),
        )
    if HOLD:
        time.sleep(HOLD)
    with pool.connection() as conn:
        conn.execute(
            f"UPDATE {SCHEMA}.runs SET ended_at = clock_timestamp()"
            " WHERE task_id = %s AND pid = %s AND ended_at IS NULL",
            (envelope.id, os.getpid()),
        )


with psycopg.connect(os.environ["PGQUEUE_DSN"], autocommit=True) as _conn:
    _conn.execute(RUNS_DDL)

queue = Queue(os.environ["PGQUEUE_DSN"], schema=SCHEMA)
loop = LoopOptions(poll_period=0.5)
limits: dict[str, Any] = {}
if MODE == "concurrency":
    limits = {"global_concurrency": 5}
elif MODE == "group":
    limits = {"group_concurrency": 1}
elif MODE == "rate":
    limits = {"rate_limit": RateLimit(50, per=1.0, burst=50)}
queue.register_kind(
    "flow",
    run,
    KindOptions(attempt_timeout=30, worker_count=WORKERS, loop=loop, **limits),
)
