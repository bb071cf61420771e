"""The service's app in process (no browser, no subprocess): the throughput chart's series
and the body of ``POST /enqueue``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from pgqueue import AsyncQueue, KindOptions, Task
from pgqueue.http import create_app
from pgqueue.http.settings import HttpSettings
from tests.conftest import Database

OPTIONS = KindOptions(attempt_timeout=30.0)


@pytest.fixture
async def served(db: Database) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncQueue]]:
    queue = AsyncQueue(db.dsn, schema=db.schema)
    queue.declare_kind("mail", OPTIONS)
    app = create_app(queue, HttpSettings(dsn=db.dsn, schema=db.schema))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client, queue
    await queue.close()


async def test_the_throughput_chart_has_a_cancelled_series(
    served: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    client, queue = served
    ids = await queue.push_tasks([Task("mail", n) for n in range(5)])
    for task_id in ids[:3]:
        assert task_id is not None and await queue.cancel_task(task_id)
    cancelled = (await client.post(f"/tasks/{ids[3]}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    assert sum(p.cancelled for p in await queue.throughput(kind="mail")) == 4

    body = (await client.get("/ui/throughput.json", params={"minutes": 5})).json()
    series = body["kinds"]["mail"]
    assert set(series) == {"succeeded", "failed", "exhausted", "cancelled"}
    assert sum(series["cancelled"]) == 4
    assert len(series["cancelled"]) == len(body["minutes"]) == 5


async def test_the_chart_script_draws_every_series_of_the_data(
    served: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    client, _ = served
    script = (await client.get("/ui/static/throughput.js")).text
    assert '"succeeded", "failed", "exhausted", "cancelled"' in script
    assert "cancelled:" in script  # it has a colour


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "mail", "payload": 1},  # through the push coalescer
        {"kind": "mail", "payload": 2, "external_key": "k"},  # coalesced, keyed
        {"kind": "mail", "payload": 3, "delay": 90},  # a push of its own
        {"kind": "mail", "payload": 4, "max_attempts": 2, "external_key": "m"},
    ],
    ids=["coalesced", "coalesced-keyed", "delayed", "own-options"],
)
async def test_enqueue_returns_the_timestamps_the_database_stored(
    served: tuple[httpx.AsyncClient, AsyncQueue], body: dict[str, object]
) -> None:
    client, _ = served
    created = await client.post("/enqueue", json=body)
    assert created.status_code == 201, created.text
    stored = (await client.get(f"/tasks/{created.json()['id']}")).json()
    for field in ("created_at", "delayed_till", "updated_at"):
        assert created.json()[field] is not None
        assert created.json()[field] == stored[field], field
    assert created.json() == stored


async def test_concurrent_enqueues_share_a_statement_and_each_gets_its_timestamps(
    served: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    client, _ = served
    answers = await asyncio.gather(
        *(client.post("/enqueue", json={"kind": "mail", "payload": n}) for n in range(20))
    )
    for answer in answers:
        stored = (await client.get(f"/tasks/{answer.json()['id']}")).json()
        assert answer.json() == stored
