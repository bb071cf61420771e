"""The audit trail of the HTTP service and the dashboard, in process: every operator action
through the API (enqueue, batch, cancel, retry of a task and of a kind, pause, resume) and the
dashboard (the same, plus bulk actions and enqueue) is recorded under the token's role and the
client's address; ``GET /audit`` and the dashboard's page show it, escaped."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from pgqueue import AsyncQueue, KindOptions, Task
from pgqueue.http import create_app
from pgqueue.http.settings import HttpSettings
from tests.conftest import Database

OPERATOR = "operator-token-0123456789"
READER = "read-token-0123456789"
ADDRESS = "192.0.2.10"


@pytest.fixture
async def service(db: Database) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncQueue]]:
    queue = AsyncQueue(db.dsn, schema=db.schema)
    queue.declare_kind("mail", KindOptions(attempt_timeout=30.0, max_attempts=1))
    settings = HttpSettings(dsn=db.dsn, schema=db.schema, api_token=OPERATOR, read_token=READER)
    transport = httpx.ASGITransport(app=create_app(queue, settings), client=(ADDRESS, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client, queue
    await queue.close()


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def summary(entries: list[Any]) -> list[tuple[Any, ...]]:
    return [(e["action"], e["kind"], e["rows"]) for e in reversed(entries)]


async def test_api_actions_are_audited_under_the_tokens_role(
    service: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    client, queue = service
    op = as_(OPERATOR)
    one = await client.post("/enqueue", json={"kind": "mail", "external_key": "a"}, headers=op)
    assert one.status_code == 201
    later = await client.post("/enqueue", json={"kind": "mail", "delay": 60}, headers=op)
    duplicate = await client.post("/enqueue", json={"kind": "mail", "external_key": "a"},
                                  headers=op)  # fmt: skip
    assert duplicate.status_code == 409  # nothing written: no entry
    batch = await client.post("/enqueue/batch", json={"tasks": [{"kind": "mail"}] * 2}, headers=op)
    assert batch.json()["created"] == 2
    task_id = one.json()["id"]
    assert (await client.post(f"/tasks/{task_id}/cancel", headers=op)).status_code == 200
    assert (await client.post(f"/tasks/{task_id}/retry", headers=op)).status_code == 200
    assert (await client.post("/kinds/mail/retry", headers=op)).status_code == 200
    assert (await client.post("/kinds/mail/pause", headers=op)).status_code == 200
    assert (await client.post("/kinds/mail/resume", headers=op)).status_code == 200

    page = await client.get("/audit", headers=as_(READER))
    assert page.status_code == 200
    entries = page.json()
    assert summary(entries) == [
        ("enqueue", "mail", 1),
        ("enqueue", "mail", 1),
        ("enqueue", "mail", 1),
        ("enqueue", "mail", 1),
        ("cancel_task", "mail", 1),
        ("retry_task", "mail", 1),
        ("retry_kind", "mail", 0),
        ("pause_kind", "mail", 1),
        ("resume_kind", "mail", 1),
    ]
    assert {(e["source"], e["actor"]) for e in entries} == {("api", "operator")}
    assert all(e["detail"]["address"] == ADDRESS for e in entries)
    first = entries[-1]
    assert first["task_id"] == task_id and first["detail"]["external_key"] == "a"
    assert entries[-2]["task_id"] == later.json()["id"] and entries[-2]["detail"]["delay"] == 60

    paged = await client.get("/audit", params={"limit": 4}, headers=as_(READER))
    assert len(paged.json()) == 4
    cursor = paged.headers["x-next-cursor"]
    rest = await client.get("/audit", params={"cursor": cursor}, headers=as_(READER))
    assert [e["id"] for e in paged.json() + rest.json()] == [e["id"] for e in entries]
    only = await client.get("/audit", params={"action": "pause_kind"}, headers=as_(READER))
    assert summary(only.json()) == [("pause_kind", "mail", 1)]
    assert (await client.get("/audit", params={"source": "web"}, headers=op)).status_code == 400
    assert (await client.get("/audit")).status_code == 401
    assert await queue.audit_log(source="python") == []


async def login(client: httpx.AsyncClient, token: str) -> str:
    """Log in through the form; the CSRF token the dashboard's forms carry."""
    answer = await client.post("/ui/login", data={"token": token, "next": "/ui/kinds"})
    assert answer.status_code == 303
    page = await client.get("/ui/kinds")
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert match, page.text
    return match.group(1)


async def test_dashboard_actions_are_audited_with_one_entry_per_bulk_action(
    service: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    client, queue = service
    ids = await queue.push_tasks([Task("mail", n) for n in range(5)])
    csrf = await login(client, OPERATOR)

    async def post(path: str, **form: Any) -> None:
        answer = await client.post(path, data={"csrf": csrf, **form})
        assert answer.status_code == 303, answer.text

    await post(f"/ui/tasks/{ids[0]}/cancel")
    await post(f"/ui/tasks/{ids[0]}/retry")
    await post("/ui/bulk", action="cancel", kind="mail", expected="3")
    await post("/ui/kinds/pause", kind="mail")
    await post("/ui/kinds/resume", kind="mail")
    await post("/ui/enqueue", kind="mail", payload='{"n": 9}', external_key="", delay="0")
    assert await queue.audit_log(source="python") == []  # the calls did not record twice

    got = [(e.action, e.kind, e.rows, e.source, e.actor) for e in reversed(await queue.audit_log())]
    assert got == [
        ("cancel_task", "mail", 1, "dashboard", "operator"),
        ("retry_task", "mail", 1, "dashboard", "operator"),
        ("bulk_cancel", "mail", 3, "dashboard", "operator"),
        ("pause_kind", "mail", 1, "dashboard", "operator"),
        ("resume_kind", "mail", 1, "dashboard", "operator"),
        ("enqueue", "mail", 1, "dashboard", "operator"),
    ]
    bulk = (await queue.audit_log(action="bulk_cancel"))[0]
    assert bulk.detail == {"kind": "mail", "confirmed": 3, "address": ADDRESS}


async def test_the_audit_page_shows_entries_escaped(
    service: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    client, queue = service
    hostile = '<script>alert("k")</script>'
    [task_id] = await queue.push_tasks([Task("mail", external_key=hostile)])
    assert await queue.cancel_task_by_key("mail", hostile)
    await login(client, READER)
    page = await client.get("/ui/audit")
    assert page.status_code == 200
    assert hostile not in page.text
    assert "&lt;script&gt;alert(" in page.text
    assert 'id="audit-table"' in page.text and "cancel_task" in page.text
    filtered = await client.get("/ui/audit", params={"source": "api"})
    assert "cancel_task" not in filtered.text and "No operator action recorded" in filtered.text
    assert (await client.get("/ui/audit", params={"source": "web"})).status_code == 400
    assert task_id is not None


async def test_limit_overrides_are_audited_from_the_api_and_the_dashboard(
    service: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    client, queue = service
    answer = await client.put(
        "/kinds/mail/limits",
        json={"rate_limit": {"n": 5, "per": 60}, "global_concurrency": 2},
        headers=as_(OPERATOR),
    )
    assert answer.status_code == 200, answer.text
    csrf = await login(client, OPERATOR)
    answer = await client.post(
        "/ui/kinds/limits", data={"csrf": csrf, "kind": "mail", "action": "clear"}
    )
    assert answer.status_code == 303, answer.text
    cleared, set_ = await queue.audit_log(action="set_limits")  # newest first
    assert (set_.source, set_.actor, set_.kind) == ("api", "operator", "mail")
    assert set_.detail["global_concurrency"] == 2 and set_.detail["address"] == ADDRESS
    assert (cleared.source, cleared.actor) == ("dashboard", "operator")
    assert cleared.detail["global_concurrency"] is None
