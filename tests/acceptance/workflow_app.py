"""The queue the workflow acceptance tests run with ``pgqueue worker`` in subprocesses.

Configured from the environment: ``PGQUEUE_DSN``, ``PGQUEUE_SCHEMA``, ``WORKERS``
(worker_count), ``LEASE_MARGIN``, ``JANITOR_PERIOD`` and ``MAX_ATTEMPTS``. Every attempt of a
``node`` task records its start and end, on the database clock, in ``<schema>.runs``; a
payload's ``until`` (epoch seconds) makes it return at that moment, ``hold`` sleep that long,
``fail`` raise. A ``report`` task records its parents' outcome counts in ``<schema>.reports``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from pgqueue import Envelope, KindOptions, LoopOptions, Queue

SCHEMA = os.environ["PGQUEUE_SCHEMA"]
WORKERS = int(os.environ.get("WORKERS", "8"))
DDL = f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.runs (
    task_id bigint NOT NULL, pid int NOT NULL,
    started_at timestamptz NOT NULL, ended_at timestamptz);
CREATE TABLE IF NOT EXISTS {SCHEMA}.reports (task_id bigint NOT NULL, counts jsonb NOT NULL)"""

pool = ConnectionPool(
    os.environ["PGQUEUE_DSN"], min_size=1, max_size=WORKERS, kwargs={"autocommit": True}, open=True
)


def node(envelope: Envelope) -> Any:
    with pool.connection() as conn:
        conn.execute(
            f"INSERT INTO {SCHEMA}.runs (task_id, pid, started_at)"
            " VALUES (%s, %s, clock_timestamp())",
            (envelope.id, os.getpid()),
        )
    payload = envelope.payload or {}
    if "until" in payload:
        time.sleep(max(0.0, float(payload["until"]) - time.time()))
    if "hold" in payload:
        time.sleep(float(payload["hold"]))
    with pool.connection() as conn:
        conn.execute(
            f"UPDATE {SCHEMA}.runs SET ended_at = clock_timestamp()"
            " WHERE task_id = %s AND pid = %s AND ended_at IS NULL",
            (envelope.id, os.getpid()),
        )
    if payload.get("fail"):
        raise RuntimeError(f"{envelope.node} fails on purpose")
    return {"node": envelope.node, "parents": len(envelope.parents)}


def report(envelope: Envelope) -> None:
    with pool.connection() as conn:
        conn.execute(
            f"INSERT INTO {SCHEMA}.reports (task_id, counts) VALUES (%s, %s)",
            (envelope.id, json.dumps(envelope.outcome_counts)),
        )


with psycopg.connect(os.environ["PGQUEUE_DSN"], autocommit=True) as _conn:
    _conn.execute(DDL)

queue = Queue(os.environ["PGQUEUE_DSN"], schema=SCHEMA)
loop = LoopOptions(
    poll_period=0.5,
    lease_margin=float(os.environ.get("LEASE_MARGIN", "10")),
    janitor_period=float(os.environ.get("JANITOR_PERIOD", "30")),
)
kind_options = KindOptions(
    attempt_timeout=30,
    worker_count=WORKERS,
    max_attempts=int(os.environ.get("MAX_ATTEMPTS", "3")),
    loop=loop,
)
queue.register_kind("node", node, kind_options)
queue.register_kind("report", report, kind_options)
