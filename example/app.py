"""The example app: an order service that pushes ``send-receipt`` in the order's transaction.

Run it with ``make run``, or run only its workers with ``pgqueue worker example.app:queue``:
both use ``$PGQUEUE_DSN``, else the embedded PostgreSQL in ``.pgdata`` (started if needed), and
apply the schema first.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import psycopg

import pgqueue.migrate
from pgqueue import (
    Envelope,
    ExpBackoffDelayer,
    Jitter,
    KindOptions,
    MustCancelTask,
    Queue,
    Task,
)

log = logging.getLogger("example")

# Where the embedded PostgreSQL keeps its data (the tests point it at a temporary directory).
DATA_DIR = Path(
    os.environ.get("EXAMPLE_DATA_DIR") or Path(__file__).resolve().parent.parent / ".pgdata"
)
MAIL_FAILURE_RATE = 0.1  # how often the pretend mail server fails (tests set it to 0)

ORDERS_DDL = """
CREATE TABLE IF NOT EXISTS orders (
    id         bigserial PRIMARY KEY,
    customer   text NOT NULL,
    total      numeric(10, 2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    receipt_sent_at timestamptz
)
"""

server: Any = None  # the embedded PostgreSQL, when this process started or joined it


def prepare_database() -> str:
    """``$PGQUEUE_DSN``, else the embedded PostgreSQL's DSN; migrated, with the orders table."""
    global server
    dsn = os.environ.get("PGQUEUE_DSN")
    if not dsn:
        from pgqueue.embedded import start_embedded

        log.info("no PGQUEUE_DSN set: starting the embedded PostgreSQL in %s", DATA_DIR)
        server, dsn = start_embedded(DATA_DIR)
    log.info("applying pgqueue's schema (pgqueue migrate) and creating the orders table")
    pgqueue.migrate.upgrade(dsn)
    with psycopg.connect(dsn) as conn:
        # CREATE TABLE IF NOT EXISTS is not safe against itself: two processes starting at once
        # (the test runner's workers) can both find the table missing. Take turns.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('example orders table'))")
        conn.execute(ORDERS_DDL)
    return dsn


def send_receipt(envelope: Envelope) -> None:
    """Pretend to e-mail a receipt; fails now and then, like a real mail server."""
    order_id = envelope.payload["order_id"]
    with psycopg.connect(DSN) as conn:
        row = conn.execute(
            "SELECT customer, total FROM orders WHERE id = %s", (order_id,)
        ).fetchone()
        if row is None:
            raise MustCancelTask(f"order {order_id} no longer exists")
        if random.random() < MAIL_FAILURE_RATE:
            raise ConnectionError("mail server did not answer")
        conn.execute("UPDATE orders SET receipt_sent_at = now() WHERE id = %s", (order_id,))
    log.info(
        "receipt for order %s sent to %s (%s), attempt %d",
        order_id, row[0], row[1], envelope.attempt,
    )  # fmt: skip


def place_order(conn: psycopg.Connection, customer: str, total: float) -> int:
    """Insert an order and its receipt task in the caller's transaction: both or neither."""
    order_id = conn.execute(
        "INSERT INTO orders (customer, total) VALUES (%s, %s) RETURNING id", (customer, total)
    ).fetchone()[0]  # type: ignore[index]
    queue.push_task_tx(
        conn, Task("send-receipt", {"order_id": order_id}, external_key=f"receipt:{order_id}")
    )
    return int(order_id)


def build_queue(dsn: str, schema: str = "pgqueue") -> Queue:
    q = Queue(dsn, schema=schema)
    q.register_kind(
        "send-receipt",
        send_receipt,
        KindOptions(
            worker_count=4,
            max_attempts=5,
            attempt_timeout=10.0,
            delayer=ExpBackoffDelayer(Jitter.EQUAL, base=0.5, max=10.0, factor=2.0),
            terminal_tasks_ttl=3600,
        ),
    )
    return q


DSN = prepare_database()
queue = build_queue(DSN)
