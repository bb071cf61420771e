"""The example app: an order service that pushes ``send-receipt`` in the order's transaction.

Run it with ``make run`` (or ``pgqueue worker example.app:queue`` against your own database).
"""

from __future__ import annotations

import logging
import os
import random

import psycopg

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

DSN = os.environ.get("PGQUEUE_DSN", "")
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


queue = build_queue(DSN) if DSN else None
