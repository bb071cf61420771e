"""The example app's own tests, written the way an application tests its tasks with
``pgqueue.testing``: assert what a request pushed, then run the due tasks inline.

The ``pgqueue_schema`` fixture comes from pgqueue's pytest plugin: a migrated schema per test
(``PGQUEUE_TEST_DSN`` names the server).
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from example import app
from pgqueue import Queue, Status
from pgqueue.pytest_plugin import TestSchema
from pgqueue.testing import assert_not_pushed, assert_pushed, drain


@pytest.fixture
def queue(pgqueue_schema: TestSchema, monkeypatch: pytest.MonkeyPatch) -> Iterator[Queue]:
    """The app's queue on the test's schema, with its orders table there too."""
    monkeypatch.setattr(app, "DSN", pgqueue_schema.dsn)
    monkeypatch.setattr(app, "MAIL_FAILURE_RATE", 0.0)
    queue = app.build_queue(pgqueue_schema.dsn, schema=pgqueue_schema.name)
    monkeypatch.setattr(app, "queue", queue)
    with psycopg.connect(pgqueue_schema.dsn) as conn:
        conn.execute(app.ORDERS_DDL)
    yield queue
    queue.close()


def receipt_sent(order_id: int) -> bool:
    with psycopg.connect(app.DSN) as conn:
        row = conn.execute("SELECT receipt_sent_at FROM orders WHERE id = %s", (order_id,))
        return row.fetchone()[0] is not None  # type: ignore[index]


def test_an_order_pushes_its_receipt_and_the_receipt_is_sent(queue: Queue) -> None:
    with psycopg.connect(app.DSN) as conn:
        order_id = app.place_order(conn, "ada", 12.5)

    assert_pushed(queue, "send-receipt", payload={"order_id": order_id}, key=f"receipt:{order_id}")
    assert not receipt_sent(order_id)

    [receipt] = drain(queue)
    assert receipt.status is Status.SUCCEEDED
    assert receipt.payload == {"order_id": order_id}
    assert receipt_sent(order_id)
    assert drain(queue) == []  # nothing left to run


def test_an_order_rolled_back_pushes_no_receipt(queue: Queue) -> None:
    with psycopg.connect(app.DSN) as conn:
        app.place_order(conn, "grace", 3.0)
        conn.rollback()

    assert_not_pushed(queue, "send-receipt")


def test_the_receipt_of_a_deleted_order_is_cancelled(queue: Queue) -> None:
    with psycopg.connect(app.DSN) as conn:
        order_id = app.place_order(conn, "linus", 7.0)
        conn.execute("DELETE FROM orders WHERE id = %s", (order_id,))

    [receipt] = drain(queue, "send-receipt")
    assert receipt.status is Status.CANCELLED
    [task] = assert_pushed(queue, "send-receipt", key=f"receipt:{order_id}")
    assert task.status == "cancelled"


def test_a_failing_mail_server_leaves_the_receipt_for_a_retry(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "MAIL_FAILURE_RATE", 1.0)
    with psycopg.connect(app.DSN) as conn:
        order_id = app.place_order(conn, "barbara", 99.0)

    [receipt] = drain(queue)
    assert receipt.status is Status.MUST_RETRY
    assert receipt.error == "ConnectionError: mail server did not answer"
    assert receipt.delay > 0  # retried later, so this drain ran it once
    assert not receipt_sent(order_id)
