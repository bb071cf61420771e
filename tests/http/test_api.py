"""Every endpoint and its error codes, through a real ``pgqueue serve`` subprocess."""

from __future__ import annotations

from tests.conftest import Database
from tests.http.conftest import Server, count_rows


def enqueue(server: Server, **body: object) -> dict[str, object]:
    response = server.client.post("/enqueue", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_enqueue_full_form(server: Server, module_db: Database) -> None:
    body = enqueue(
        server,
        kind="email",
        payload={"user_id": 42},
        external_key="welcome:42",
        delay=3600,
        max_attempts=7,
    )
    assert body["kind"] == "email"
    assert body["max_attempts"] == 7 and body["attempts_left"] == 7
    row = module_db.fetch(
        "SELECT kind, payload, external_key, max_attempts, delayed_till > now() + interval '59 min'"
        " FROM {schema}.tasks WHERE id = %s",
        (body["id"],),
    )
    assert row == [("email", {"user_id": 42}, "welcome:42", 7, True)]


def test_enqueue_uses_kind_default_max_attempts(server: Server) -> None:
    body = enqueue(server, kind="email", payload=None)
    assert body["max_attempts"] == 5


def test_enqueue_unknown_kind_is_422_and_writes_nothing(
    server: Server, module_db: Database
) -> None:
    before = count_rows(module_db)
    response = server.client.post("/enqueue", json={"kind": "no-such-kind", "payload": 1})
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_kind"
    assert count_rows(module_db) == before


def test_enqueue_over_capacity_is_429(server: Server, module_db: Database) -> None:
    enqueue(server, kind="capped", payload=1)
    enqueue(server, kind="capped", payload=2)
    before = count_rows(module_db)
    response = server.client.post("/enqueue", json={"kind": "capped", "payload": 3})
    assert response.status_code == 429
    assert response.json()["code"] == "capacity_exceeded"
    assert count_rows(module_db) == before


def test_enqueue_both_spellings_of_key_is_400(server: Server, module_db: Database) -> None:
    before = count_rows(module_db)
    response = server.client.post("/enqueue", json={"id": "a", "external_key": "b"})
    assert response.status_code == 400
    response = server.client.post("/enqueue", json={"max_attempts": 2, "max_retries": 1})
    assert response.status_code == 400
    assert count_rows(module_db) == before


def test_batch_enqueue_with_duplicates(server: Server, module_db: Database) -> None:
    response = server.client.post(
        "/enqueue/batch",
        json={
            "tasks": [
                {"kind": "email", "payload": {"n": 1}},
                {"kind": "email", "payload": {"n": 2}, "external_key": "batch-k"},
                {"kind": "email", "payload": {"n": 3}, "external_key": "batch-k"},
                {"payload": "default kind"},
            ],
            "delay": 60,
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["created"] == 3 and body["duplicates"] == 1
    assert body["ids"][2] is None
    ids = [i for i in body["ids"] if i is not None]
    kinds = module_db.fetch(
        "SELECT kind FROM {schema}.tasks WHERE id = ANY(%s) ORDER BY id", (ids,)
    )
    assert kinds == [("email",), ("email",), ("default",)]


def test_batch_with_one_bad_item_writes_nothing(server: Server, module_db: Database) -> None:
    before = count_rows(module_db)
    response = server.client.post(
        "/enqueue/batch", json={"tasks": [{"kind": "email"}, {"kind": "no-such-kind"}]}
    )
    assert response.status_code == 422
    response = server.client.post(
        "/enqueue/batch", json={"tasks": [{"kind": "email"}, {"kind": "email", "payload": "\0"}]}
    )
    assert response.status_code == 400
    response = server.client.post("/enqueue/batch", json={"tasks": []})
    assert response.status_code == 400
    assert count_rows(module_db) == before


def test_get_task_by_path_and_query(server: Server) -> None:
    created = enqueue(server, kind="email", payload={"a": [1, 2]})
    by_path = server.client.get(f"/tasks/{created['id']}")
    by_query = server.client.get("/task", params={"id": created["id"]})
    assert by_path.status_code == by_query.status_code == 200
    assert by_path.json() == by_query.json()
    detail = by_path.json()
    assert detail["payload"] == {"a": [1, 2]}
    assert detail["messages"] == []
    assert detail["created_at"] and detail["updated_at"] and detail["delayed_till"]


def test_get_unknown_task_is_404(server: Server) -> None:
    response = server.client.get("/tasks/999999999")
    assert response.status_code == 404
    assert response.json() == {"error": "task not found", "code": "task_not_found"}


def test_cancel_by_id(server: Server, module_db: Database) -> None:
    created = enqueue(server, kind="email", payload=1, delay=600)
    response = server.client.post(f"/tasks/{created['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert (
        module_db.scalar("SELECT status::text FROM {schema}.tasks WHERE id = %s", (created["id"],))
        == "cancelled"
    )
    again = server.client.post(f"/tasks/{created['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["task_id"] == created["id"]
    assert again.json()["code"] == "not_cancellable"


def test_cancel_unknown_task_is_404(server: Server) -> None:
    assert server.client.post("/tasks/999999998/cancel").status_code == 404


def test_list_tasks_filters_and_cursor(server: Server) -> None:
    ids = [
        enqueue(server, kind="email", payload={"user_id": n, "tag": "list"},
                external_key=f"list:{n}")["id"]
        for n in range(5)
    ]  # fmt: skip
    first = server.client.get("/tasks", params={"key_prefix": "list:", "limit": 2})
    assert first.status_code == 200
    assert [t["id"] for t in first.json()] == ids[::-1][:2]
    cursor = first.headers["X-Next-Cursor"]
    assert 'rel="next"' in first.headers["Link"]
    # A task pushed between pages does not shift the next page.
    enqueue(server, kind="email", payload={"user_id": 99}, external_key="list:99")
    second = server.client.get(
        "/tasks", params={"key_prefix": "list:", "limit": 2, "cursor": cursor}
    )
    assert [t["id"] for t in second.json()] == ids[::-1][2:4]
    by_payload = server.client.get("/tasks", params={"payload": '{"user_id": 3, "tag": "list"}'})
    assert [t["id"] for t in by_payload.json()] == [ids[3]]
    by_kind = server.client.get("/tasks", params={"kind": "email", "status": "new", "limit": 500})
    assert {t["kind"] for t in by_kind.json()} == {"email"}
    assert set(ids) <= {t["id"] for t in by_kind.json()}


def test_list_tasks_seed_shape_without_filters(server: Server) -> None:
    enqueue(server, payload="seed list")
    response = server.client.get("/tasks")
    assert response.status_code == 200
    tasks = response.json()
    assert isinstance(tasks, list) and tasks
    assert {"id", "payload", "max_retries", "status", "attempts"} <= set(tasks[0])


def test_list_tasks_bad_filters_are_400(server: Server) -> None:
    for params in (
        {"status": "running"},
        {"payload": "{not json"},
        {"cursor": "abc"},
        {"limit": "0"},
        {"limit": "501"},
        {"kind": ""},
    ):
        response = server.client.get("/tasks", params=params)
        assert response.status_code == 400, (params, response.text)
        assert set(response.json()) >= {"error", "code"}


def test_kinds_pause_resume(server: Server) -> None:
    kinds = {k["kind"]: k for k in server.client.get("/kinds").json()}
    assert {"email", "capped", "flaky", "slow", "default"} <= set(kinds)
    email = kinds["email"]
    assert email["registered"] is True and email["paused"] is False
    assert email["options"]["max_attempts"] == 5
    assert kinds["capped"]["options"]["max_pending"] == 2
    assert server.client.post("/kinds/email/pause").json() == {"kind": "email", "paused": True}
    paused = {k["kind"]: k for k in server.client.get("/kinds").json()}["email"]
    assert paused["paused"] is True and paused["paused_at"]
    assert server.client.post("/kinds/email/resume").json() == {"kind": "email", "paused": False}
    assert {k["kind"]: k for k in server.client.get("/kinds").json()}["email"]["paused"] is False


def test_kind_limits_are_overridden_and_cleared(server: Server, module_db: Database) -> None:
    response = server.client.put(
        "/kinds/email/limits",
        json={"rate_limit": {"n": 10, "per": 1}, "global_concurrency": 4},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rate_limit"] == {"n": 10.0, "per": 1.0, "burst": 10}
    assert body["global_concurrency"] == 4 and body["group_concurrency"] is None
    # A field left out keeps its override; null clears one.
    body = server.client.put("/kinds/email/limits", json={"global_concurrency": None}).json()
    assert body["rate_limit"]["n"] == 10.0 and body["global_concurrency"] is None
    listed = {k["kind"]: k for k in server.client.get("/kinds").json()}["email"]
    assert listed["limit_overrides"]["rate_limit"]["n"] == 10.0
    audit = module_db.fetch(
        "SELECT actor, limits FROM {schema}.limit_changes WHERE kind = 'email' ORDER BY id"
    )
    assert [limits for _, limits in audit[-2:]] == [
        {"rate_limit": {"n": 10, "per": 1.0, "burst": 10}, "global_concurrency": 4},
        {"global_concurrency": None},
    ]
    assert all(actor.startswith("api:") for actor, _ in audit)
    server.client.put("/kinds/email/limits", json={"rate_limit": None})
    body = server.client.put(
        "/kinds/email/limits", json={"group_rate_limit": {"n": 3, "per": 60}}
    ).json()
    assert body["group_rate_limit"] == {"n": 3.0, "per": 60.0, "burst": 3}
    body = server.client.put("/kinds/email/limits", json={"group_rate_limit": None}).json()
    assert body["group_rate_limit"] is None
    for bad in (
        {"rate_limit": {"n": 0}},
        {"rate_limit": {"n": -1}},
        {"rate_limit": {"n": "10"}},
        {"global_concurrency": 0},
        {"group_concurrency": True},
        {"group_rate_limit": {"n": 0}},
        {"burst": 3},
    ):
        response = server.client.put("/kinds/email/limits", json=bad)
        assert response.status_code == 400, (bad, response.text)
    assert server.client.put("/kinds/nope/limits", json={}).status_code == 404


def test_unknown_kind_in_path_is_404(server: Server) -> None:
    for action in ("pause", "resume", "retry"):
        response = server.client.post(f"/kinds/no-such-kind/{action}")
        assert response.status_code == 404, action
        assert response.json()["code"] == "unknown_kind"


def test_retry_revives_exhausted_tasks(server: Server, module_db: Database) -> None:
    created = enqueue(server, kind="flaky", payload=1)
    # No workers in this server: exhaust the task the way a failed last attempt leaves it.
    module_db.fetch(
        "UPDATE {schema}.tasks SET status = 'no_attempts_left', attempts_left = 0,"
        " attempts_elapsed = 1 WHERE id = %s",
        (created["id"],),
    )
    response = server.client.post("/kinds/flaky/retry", json={"attempts": 2})
    assert response.status_code == 200
    assert response.json() == {"kind": "flaky", "retried": 1}
    task = server.client.get(f"/tasks/{created['id']}").json()
    assert task["status"] == "must_retry" and task["attempts_left"] == 2
    bad = server.client.post("/kinds/flaky/retry", json={"attempts": 0})
    assert bad.status_code == 400


def test_retry_one_task(server: Server, module_db: Database) -> None:
    created = enqueue(server, kind="flaky", payload="again")
    module_db.fetch(
        "UPDATE {schema}.tasks SET status = 'no_attempts_left', attempts_left = 0,"
        " attempts_elapsed = 1 WHERE id = %s",
        (created["id"],),
    )
    response = server.client.post(f"/tasks/{created['id']}/retry", json={"attempts": 3})
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "must_retry" and task["attempts_left"] == 3
    assert server.client.post("/tasks/999999999/retry").status_code == 404
    bad = server.client.post(f"/tasks/{created['id']}/retry", json={"attempts": 0})
    assert bad.status_code == 400 and bad.json()["code"]
    # A running task answers 409: make the row look claimed, with a live lease.
    module_db.fetch(
        "UPDATE {schema}.tasks SET claim_token = gen_random_uuid(),"
        " delayed_till = now() + interval '1 hour' WHERE id = %s",
        (created["id"],),
    )
    busy = server.client.post(f"/tasks/{created['id']}/retry")
    assert busy.status_code == 409 and busy.json()["code"] == "task_running"


def test_throughput_and_metrics_answer(server: Server) -> None:
    assert server.client.get("/throughput", params={"minutes": 5}).status_code == 200
    metrics = server.client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'pgqueue_tasks{kind="email",status="new"}' in metrics.text


def test_openapi_and_vendored_docs(server: Server) -> None:
    spec = server.client.get("/openapi.json").json()
    paths = ["/enqueue", "/enqueue/batch", "/task", "/tasks", "/tasks/{task_id}",
             "/tasks/{task_id}/cancel", "/tasks/{task_id}/retry", "/kinds", "/kinds/{kind}/retry",
             "/kinds/{kind}/pause", "/kinds/{kind}/resume", "/healthz", "/metrics"]  # fmt: skip
    for path in paths:
        assert path in spec["paths"], path
    assert "EnqueueRequest" in spec["components"]["schemas"]
    docs = server.client.get("/docs")
    assert docs.status_code == 200
    assert "http://" not in docs.text and "https://" not in docs.text
    assert server.client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert server.client.get("/docs/assets/swagger-ui.css").status_code == 200


def test_unknown_route_and_method_use_the_error_shape(server: Server) -> None:
    missing = server.client.get("/no/such/route")
    assert missing.status_code == 404 and set(missing.json()) == {"error", "code"}
    wrong = server.client.get("/enqueue")
    assert wrong.status_code == 405 and set(wrong.json()) == {"error", "code"}


def test_the_dashboard_kinds_page_shows_and_sets_limits(server: Server) -> None:
    import re

    server.client.put("/kinds/email/limits", json={"rate_limit": {"n": 5, "per": 60}})
    page = server.client.get("/ui/kinds").text
    row = page[page.index('data-kind="email"') :]
    row = row[: row.index("</tr>")]
    assert "rate 5/m*" in row and 'class="inline limits-form"' in row
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match
    origin = {"origin": str(server.client.base_url).rstrip("/")}
    response = server.client.post(
        "/ui/kinds/limits",
        data={
            "kind": "email",
            "concurrency": "2",
            "group_rate": "3/m",
            "action": "set",
            "csrf": match.group(1),
        },
        headers=origin,
    )
    assert response.status_code in (302, 303), response.text
    row = server.client.get("/ui/kinds").text
    assert "rate 5/m*, max 2*, group rate 3/m*" in row
    response = server.client.post(
        "/ui/kinds/limits",
        data={"kind": "email", "action": "clear", "csrf": match.group(1)},
        headers=origin,
    )
    assert response.status_code in (302, 303), response.text
    body = server.client.get("/kinds").json()
    email = {k["kind"]: k for k in body}["email"]
    assert email["limit_overrides"]["rate_limit"] is None
    bad = server.client.post(
        "/ui/kinds/limits",
        data={"kind": "email", "rate": "fast", "action": "set", "csrf": match.group(1)},
        headers=origin,
    )
    assert bad.status_code == 400


def test_task_body_and_dashboard_page_show_the_result(server: Server, module_db: Database) -> None:
    created = enqueue(server, kind="email", payload=None)
    module_db.fetch(
        "UPDATE {schema}.tasks SET status = 'succeeded', finished_at = now(),"
        ' result = \'{"sent": "<b>ok</b>"}\' WHERE id = %s',
        (created["id"],),
    )
    assert created["result"] is None
    body = server.client.get(f"/tasks/{created['id']}").json()
    assert body["result"] == {"sent": "<b>ok</b>"}
    page = server.client.get(f"/ui/tasks/{created['id']}")
    assert page.status_code == 200
    assert 'id="task-result"' in page.text and "&lt;b&gt;ok&lt;/b&gt;" in page.text
