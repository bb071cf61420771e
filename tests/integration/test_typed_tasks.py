"""Typed tasks against a real PostgreSQL: pushed rows, a real worker rebuilding dataclass and
pydantic arguments, transactions that roll back, and pushes refused before any SQL."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel

from pgqueue import (
    AsyncQueue,
    Envelope,
    InvalidTask,
    Jitter,
    JitterDelayer,
    KindOptions,
    LoopOptions,
    Queue,
)
from tests.conftest import Database
from tests.helpers import Recorder

FAST = LoopOptions(poll_period=0.2, janitor_period=0.2, lease_margin=2.0)


def opts(**kwargs: Any) -> KindOptions:
    kwargs.setdefault("attempt_timeout", 5.0)
    kwargs.setdefault("loop", FAST)
    kwargs.setdefault("delayer", JitterDelayer(Jitter.ZERO, base=0.05))
    return KindOptions(**kwargs)


@dataclass
class Address:
    street: str
    city: str


@dataclass
class Parcel:
    weight: float
    to: Address
    fragile: bool = False


class LineItem(BaseModel):
    sku: str
    quantity: int


class Order(BaseModel):
    number: str
    items: list[LineItem]
    note: str | None = None


def payloads(db: Database) -> list[Any]:
    return [row[0] for row in db.fetch("SELECT payload FROM {schema}.tasks ORDER BY id")]


def test_dataclass_and_pydantic_arguments_round_trip_through_a_worker(db: Database) -> None:
    seen: list[tuple[Any, ...]] = []

    with Queue(db.dsn, schema=db.schema) as queue:

        @queue.task("ship", opts())
        def ship(envelope: Envelope, order: Order, parcel: Parcel, copies: int = 1) -> None:
            seen.append((envelope.kind, envelope.attempt, order, parcel, copies))

        recorder = Recorder(queue)
        order = Order(number="A-1", items=[LineItem(sku="x", quantity=2)])
        parcel = Parcel(1.5, Address("1 Main St", "Springfield"), fragile=True)
        task_id = ship.push(order, parcel=parcel)
        assert isinstance(task_id, int)
        assert payloads(db) == [
            {
                "order": {"number": "A-1", "items": [{"sku": "x", "quantity": 2}], "note": None},
                "parcel": {
                    "weight": 1.5,
                    "to": {"street": "1 Main St", "city": "Springfield"},
                    "fragile": True,
                },
            }
        ]
        queue.start()
        recorder.wait_status(task_id, "succeeded")
    assert seen == [("ship", 1, order, parcel, 1)]
    assert isinstance(seen[0][2], Order) and isinstance(seen[0][2].items[0], LineItem)
    assert isinstance(seen[0][3].to, Address)


async def test_the_async_queue_runs_typed_tasks_and_awaits_their_pushes(db: Database) -> None:
    seen: list[tuple[Order, list[Address]]] = []
    ran = asyncio.Event()

    async with AsyncQueue(db.dsn, schema=db.schema) as queue:

        @queue.task("deliver", opts())
        async def deliver(order: Order, stops: list[Address]) -> None:
            seen.append((order, stops))
            ran.set()

        order = Order(number="B-2", items=[], note="leave at the door")
        stops = [Address("2 Elm St", "Shelbyville")]
        assert isinstance(await deliver.push(order, stops), int)
        await queue.start()
        async with asyncio.timeout(20):
            await ran.wait()
        await queue.stop()
    assert seen == [(order, stops)]


def test_bad_arguments_push_nothing(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:

        @queue.task("mail", opts())
        def mail(user_id: int, template: str = "welcome", meta: Any = None) -> None: ...

        with pytest.raises(InvalidTask, match="missing a required argument: 'user_id'"):
            mail.push()  # type: ignore[call-arg]
        with pytest.raises(InvalidTask, match="unexpected keyword argument 'locale'"):
            mail.push(1, locale="fr")  # type: ignore[call-arg]
        with pytest.raises(InvalidTask, match="argument 'user_id' must be int, got str"):
            mail.push("1")  # type: ignore[arg-type]
        with pytest.raises(InvalidTask, match="argument 'meta' is not JSON-serialisable"):
            mail.push(1, meta={"at": datetime.now(UTC)})
        with pytest.raises(InvalidTask, match="argument 'template' must be str, got set"):
            mail.push(1, {"a"})  # type: ignore[arg-type]
        assert payloads(db) == []
        assert mail.push(1) is not None
        assert payloads(db) == [{"user_id": 1}]


def test_push_tx_exists_only_if_the_transaction_commits(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:

        @queue.task("mail", opts())
        def mail(user_id: int) -> None: ...

        with psycopg.connect(db.dsn) as conn:
            assert mail.push_tx(conn, 1) is not None
            assert mail.configure(key="k").push_tx(conn, user_id=2) is not None
            conn.rollback()
        assert payloads(db) == []
        with psycopg.connect(db.dsn) as conn:
            mail.push_tx(conn, 3)
            conn.commit()
        assert payloads(db) == [{"user_id": 3}]


def test_configure_sets_the_external_key_and_the_delay(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:

        @queue.task("mail", opts())
        def mail(user_id: int) -> None: ...

        welcome = mail.configure(key="welcome:42", delay=3600)
        first = welcome.push(42)
        assert first is not None
        assert welcome.push(42) is None  # the key is taken while the row exists
        assert mail.push(42) is not None  # the unconfigured task has no key
        rows = db.fetch(
            "SELECT external_key, delayed_till > now() + interval '50 minutes'"
            " FROM {schema}.tasks ORDER BY id"
        )
        assert rows == [("welcome:42", True), (None, False)]


def test_a_typed_task_runs_inline_without_a_database_round_trip(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:

        @queue.task("total", opts())
        def total(order: Order) -> int:
            return sum(item.quantity for item in order.items)

        order = Order(
            number="C", items=[LineItem(sku="a", quantity=2), LineItem(sku="b", quantity=3)]
        )
        assert total(order) == 5
        assert payloads(db) == []
