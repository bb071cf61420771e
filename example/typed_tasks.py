"""Typed tasks: functions registered with ``@queue.task`` and pushed with their own arguments.

``make lint`` type-checks this module with ``mypy --strict``: ``push`` and ``push_tx`` take the
decorated function's parameters, so a wrong argument is a type error before it is an
``InvalidTask`` at run time. Run its workers with ``pgqueue worker example.typed_tasks:queue``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psycopg
from pydantic import BaseModel

from pgqueue import AsyncQueue, Envelope, KindOptions, Queue

DSN = os.environ.get("PGQUEUE_DSN", "postgresql:///app")

queue = Queue(DSN)


@dataclass
class Address:
    street: str
    city: str


class Invoice(BaseModel):
    number: str
    amount: float
    lines: list[str] = []


@queue.task("send-email", KindOptions(attempt_timeout=30, max_attempts=5))
def send_email(user_id: int, template: str = "welcome") -> str:
    """Send one of the templates to a user."""
    return f"{template} to {user_id}"


@queue.task("ship-parcel", KindOptions(attempt_timeout=60))
def ship_parcel(envelope: Envelope, order_id: int, to: Address) -> None:
    """Ship an order; the envelope says which attempt this is."""
    print(f"attempt {envelope.attempt}: order {order_id} to {to.street}, {to.city}")


@queue.task("bill", KindOptions(attempt_timeout=30))
async def bill(invoice: Invoice, notify: bool | None = None) -> float:
    """Bill an invoice (an async handler on the blocking queue is fine too)."""
    return invoice.amount


def place_order(conn: psycopg.Connection[object], order_id: int, user_id: int) -> None:
    """Push from the order's own transaction: the tasks exist if and only if it commits."""
    ship_parcel.push_tx(conn, order_id, Address("1 Main St", "Springfield"))
    send_email.configure(key=f"order:{order_id}", delay=60).push_tx(conn, user_id, "receipt")
    bill.push_tx(conn, Invoice(number=f"INV-{order_id}", amount=12.5))


def welcome(user_id: int) -> int | None:
    """Push a welcome mail; the task id, or None when this user already has one waiting."""
    task_id: int | None = send_email.configure(key=f"welcome:{user_id}").push(user_id=user_id)
    return task_id


def inline() -> str:
    """Calling the task runs the function here and now, as tests do."""
    sent: str = send_email(42, template="reset")
    return sent


aqueue = AsyncQueue(DSN)


@aqueue.task("index-document", KindOptions(attempt_timeout=10))
async def index_document(document_id: int, tags: list[str]) -> None:
    """Index a document (on the awaitable queue, ``push`` is awaited)."""


async def reindex(document_ids: list[int]) -> list[int | None]:
    return [await index_document.push(d, tags=["reindex"]) for d in document_ids]
