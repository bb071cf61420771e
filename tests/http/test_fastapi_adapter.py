"""``pgqueue.adapters.fastapi`` in process: the lifespan runs and drains the queue, the
dependency hands it to endpoints, and the mounted API and dashboard stay under their prefix
with the tokens and roles of ``pgqueue serve``."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from example.fastapi_app.app import build_app
from pgqueue import AsyncQueue, KindOptions, QueueState, SchemaNotMigrated
from pgqueue.adapters.fastapi import QueueDependency, get_queue, lifespan, mount
from pgqueue.http import HttpSettings
from tests.conftest import Database

OPERATOR = "operator-token-0123456789"
READ = "read-token-0123456789"
OPERATOR_HEADERS = {"Authorization": f"Bearer {OPERATOR}"}
READ_HEADERS = {"Authorization": f"Bearer {READ}"}
# Every URL the dashboard writes into a page: links, forms, scripts, styles, htmx, chart data.
_URL = re.compile(r'(?:href|src|action|hx-get|hx-post|data-source)="([^"]*)"')


def settings_for(db: Database) -> HttpSettings:
    return HttpSettings(dsn=db.dsn, schema=db.schema, api_token=OPERATOR, read_token=READ)


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` in this process, with the app's lifespan running around it."""
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield client


@pytest.fixture
async def example(db: Database) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncQueue]]:
    """The example app on this test's schema, its lifespan running (workers started)."""
    app, queue = build_app(
        db.dsn, schema=db.schema, app_schema=db.schema, settings=settings_for(db)
    )
    async with serving(app) as client:
        yield client, queue


def urls_in(html: str) -> list[str]:
    return [url for url in _URL.findall(html) if not url.startswith(("#", "http"))]


async def test_the_lifespan_starts_the_workers_and_drains_them_at_shutdown(db: Database) -> None:
    queue = AsyncQueue(db.dsn, schema=db.schema)
    ran: list[int] = []

    @queue.task("note", KindOptions(attempt_timeout=5))
    async def note(n: int) -> None:
        ran.append(n)

    app = FastAPI(lifespan=lifespan(queue))

    @app.post("/notes/{n}")
    async def push(n: int, queue: QueueDependency) -> dict[str, Any]:
        assert queue is get_queue_of(app)
        return {"id": await note.push(n), "state": queue.state.value}

    async with serving(app) as client:
        assert queue.state is QueueState.RUNNING
        response = await client.post("/notes/7")
        assert response.status_code == 200 and response.json()["state"] == "running"
        task_id = response.json()["id"]
    assert queue.state is QueueState.CLOSED
    # The drain let a claimed task finish; one still waiting stays in the database.
    status = db.scalar("SELECT status::text FROM {schema}.tasks WHERE id = %s", (task_id,))
    assert status in ("succeeded", "new")
    assert (status == "succeeded") == (ran == [7])


def get_queue_of(app: FastAPI) -> AsyncQueue:
    class Stub:
        pass

    request: Any = Stub()
    request.app = app
    return get_queue(request)


async def test_a_schema_that_is_not_migrated_fails_the_startup_and_closes_the_queue(
    empty_schema: Database,
) -> None:
    queue = AsyncQueue(empty_schema.dsn, schema=empty_schema.schema)
    app = FastAPI(lifespan=lifespan(queue))
    with pytest.raises(SchemaNotMigrated):
        async with serving(app):
            pass
    assert queue.state is QueueState.CLOSED


def test_the_dependency_says_what_is_missing_without_the_lifespan() -> None:
    app = FastAPI()
    with pytest.raises(RuntimeError, match=r"FastAPI\(lifespan=lifespan\(queue\)\)"):
        get_queue_of(app)


async def test_a_producer_only_lifespan_starts_no_workers(db: Database) -> None:
    queue = AsyncQueue(db.dsn, schema=db.schema)
    queue.declare_kind("k", KindOptions(attempt_timeout=5))
    app = FastAPI(lifespan=lifespan(queue, workers=False))
    async with serving(app):
        assert queue.state is QueueState.INIT
    assert queue.state is QueueState.CLOSED


async def test_the_example_pushes_in_the_request_transaction(
    example: tuple[httpx.AsyncClient, AsyncQueue], db: Database
) -> None:
    client, _ = example
    created = await client.post("/signups", json={"name": "Ada", "email": "ada@example.org"})
    assert created.status_code == 201, created.text
    user_id, task_id = created.json()["id"], created.json()["welcome_task"]
    refused = await client.post(
        "/signups", json={"name": "Bob", "email": "bob@example.org", "invited_by": 999}
    )
    assert refused.status_code == 404
    duplicate = await client.post("/signups", json={"name": "Ada", "email": "ada@example.org"})
    assert duplicate.status_code == 409
    rows = db.fetch("SELECT kind, payload, external_key FROM {schema}.tasks ORDER BY id")
    assert rows == [
        (
            "send-welcome",
            {
                "user_id": user_id,
                "profile": {"name": "Ada", "email": "ada@example.org", "newsletter": False},
            },
            f"welcome:{user_id}",
        )
    ]
    assert db.fetch("SELECT id FROM {schema}.signups") == [(user_id,)]
    assert isinstance(task_id, int)


async def test_the_mounted_api_takes_the_tokens_and_roles_of_pgqueue_serve(
    example: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    client, _ = example
    assert (await client.get("/pgqueue/kinds")).status_code == 401
    kinds = await client.get("/pgqueue/kinds", headers=READ_HEADERS)
    assert kinds.status_code == 200
    assert "send-welcome" in {k["kind"] for k in kinds.json()}
    body = {
        "kind": "send-welcome",
        "payload": {"user_id": 1, "profile": {"name": "a", "email": "b"}},
    }
    assert (
        await client.post("/pgqueue/enqueue", json=body, headers=READ_HEADERS)
    ).status_code == 403
    assert (
        await client.post("/pgqueue/enqueue", json=body, headers=OPERATOR_HEADERS)
    ).status_code == 201
    assert (await client.get("/pgqueue/healthz")).status_code == 200
    assert (
        await client.get("/kinds", headers=READ_HEADERS)
    ).status_code == 404  # only under the prefix


async def test_the_mounted_dashboard_links_redirects_and_assets_stay_under_the_prefix(
    example: tuple[httpx.AsyncClient, AsyncQueue],
) -> None:
    client, _ = example
    login = await client.get("/pgqueue/ui/tasks?kind=send-welcome", follow_redirects=False)
    assert login.status_code == 303
    assert login.headers["location"] == "/pgqueue/ui/login?next=%2Fui%2Ftasks%3Fkind%3Dsend-welcome"
    link = await client.get(f"/pgqueue/ui/kinds?token={OPERATOR}", follow_redirects=False)
    assert link.status_code == 303 and link.headers["location"] == "/pgqueue/ui/kinds"
    pages = ["/pgqueue/", "/pgqueue/ui/tasks", "/pgqueue/ui/kinds", "/pgqueue/ui/throughput"]
    seen: set[str] = set()
    for page in pages:
        response = await client.get(page)
        assert response.status_code == 200, page
        urls = urls_in(response.text)
        assert urls, page
        outside = [url for url in urls if not url.startswith("/pgqueue/")]
        assert outside == [], (page, outside)
        seen.update(urls)
    for url in sorted(u for u in seen if "/ui/static/" in u or u.endswith(".json")):
        assert (await client.get(url)).status_code == 200, url
    paused = await client.post(
        "/pgqueue/ui/kinds/pause",
        data={
            "kind": "send-welcome",
            "csrf": csrf_of((await client.get("/pgqueue/ui/kinds")).text),
        },
        follow_redirects=False,
    )
    assert paused.status_code == 303 and paused.headers["location"] == "/pgqueue/ui/kinds"
    docs = await client.get("/pgqueue/docs", headers=READ_HEADERS)
    assert docs.status_code == 200
    assert "/pgqueue/openapi.json" in docs.text and "/pgqueue/docs/assets/" in docs.text


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def test_mount_refuses_a_path_that_cannot_be_a_prefix(db: Database) -> None:
    queue = AsyncQueue(db.dsn, schema=db.schema)
    for path in ("pgqueue", "/pgqueue/"):
        with pytest.raises(ValueError, match="mount path"):
            mount(FastAPI(), queue, path, settings_for(db))
