"""Blocked workflow nodes are counted as their own status wherever statuses are counted: the
kinds overview, ``GET /kinds``, the dashboard's overview and kinds page, the task list's
filter and the ``pgqueue_tasks`` gauge (the service's app in process)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgqueue import AsyncQueue, KindOptions, Task, Workflow
from pgqueue.http import create_app
from pgqueue.http.settings import HttpSettings
from pgqueue.store.operations import WorkflowIds
from tests.conftest import Database


@pytest.fixture
async def served(db: Database) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncQueue]]:
    queue = AsyncQueue(db.dsn, schema=db.schema)
    queue.declare_kind("mail", KindOptions(attempt_timeout=30.0))
    app = create_app(queue, HttpSettings(dsn=db.dsn, schema=db.schema))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client, queue
    await queue.close()


async def push_one_blocked(queue: AsyncQueue) -> WorkflowIds:
    """A task alone and a workflow of two nodes: ``new`` 2, ``blocked`` 1."""
    await queue.push_task(Task("mail", "alone"))
    wf = Workflow()
    first = wf.add("first", Task("mail", 1))
    wf.add("second", Task("mail", 2), after=[first])
    return await queue.push_workflow(wf)


async def test_the_overview_counts_a_blocked_node_apart_and_never_as_due(
    served: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    _, queue = served
    await push_one_blocked(queue)
    [info] = await queue.list_kinds()
    assert info.counts["blocked"] == 1
    assert info.counts["new"] == 2
    assert info.counts["due"] == 2  # the blocked node is not waiting for a worker


async def test_the_api_lists_the_blocked_count_of_a_kind(
    served: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    client, queue = served
    await push_one_blocked(queue)
    [kind] = (await client.get("/kinds")).json()
    assert kind["kind"] == "mail"
    assert kind["counts"]["blocked"] == 1
    assert kind["counts"]["new"] == 2


async def test_the_dashboard_shows_blocked_on_the_overview_and_kinds_page_and_filters_it(
    served: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    client, queue = served
    ids = await push_one_blocked(queue)
    html = (await client.get("/")).text
    blocked = re.search(r'data-kind="mail" data-status="blocked">(\d+)<', html)
    assert blocked is not None and blocked.group(1) == "1"
    assert "released" in html  # the arrow from blocked to new
    kinds = (await client.get("/ui/kinds")).text
    cell = re.search(r'<td class="blocked">(\d+)</td>', kinds)
    assert cell is not None and cell.group(1) == "1"
    listed = (await client.get("/ui/tasks", params={"status": "blocked"})).text
    assert f"/ui/tasks/{ids['second']}" in listed
    assert f"/ui/tasks/{ids['first']}" not in listed
    assert '<option value="blocked"' in listed


async def test_the_task_gauge_has_a_blocked_sample(
    served: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    client, queue = served
    await push_one_blocked(queue)
    text = (await client.get("/metrics")).text
    found = {
        (s.labels.get("kind"), s.labels.get("status")): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "pgqueue_tasks"
        for s in family.samples
    }
    assert found["mail", "blocked"] == 1
    assert found["mail", "new"] == 2
    assert found["mail", "due"] == 2


async def test_cancel_pending_on_the_dashboard_counts_and_cancels_blocked_nodes(
    served: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    client, queue = served
    ids = await push_one_blocked(queue)
    page = (await client.get("/ui/bulk", params={"action": "cancel", "status": "blocked"})).text
    assert 'id="bulk-error"' not in page
    count = re.search(r'<strong id="bulk-count">(\d+)</strong>', page)
    assert count is not None and count.group(1) == "1"
    csrf = re.search(r'name="csrf" value="([0-9a-f]*)"', page)
    assert csrf is not None
    answer = await client.post(
        "/ui/bulk",
        data={"csrf": csrf.group(1), "action": "cancel", "status": "blocked", "expected": "1"},
    )
    assert answer.status_code == 303, answer.text
    second = await queue.get_task(ids["second"])
    first = await queue.get_task(ids["first"])
    assert second is not None and second.status == "cancelled"
    assert first is not None and first.status == "new"
