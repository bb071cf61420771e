"""The seed service's example requests and responses, through a real server."""

from __future__ import annotations

from tests.conftest import Database
from tests.http.conftest import Server, count_rows


def test_seed_enqueue_example_creates_task_with_seed_fields(server: Server) -> None:
    response = server.client.post(
        "/enqueue", json={"id": "seed-123", "payload": "some data", "max_retries": 3}
    )
    assert response.status_code == 201
    body = response.json()
    assert isinstance(body["id"], int)
    assert body["external_key"] == "seed-123"
    assert body["payload"] == "some data"
    assert body["max_retries"] == 3
    assert body["max_attempts"] == 4
    assert body["attempts"] == 0
    assert body["status"] == "new"


def test_seed_enqueue_with_bare_curl_content_type(server: Server) -> None:
    # curl -d sends application/x-www-form-urlencoded; the seed accepted JSON regardless.
    response = server.client.post(
        "/enqueue",
        content=b'{"id": "seed-curl", "payload": "x"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 201, response.text


def test_seed_duplicate_id_is_409_naming_existing_task(server: Server, module_db: Database) -> None:
    first = server.client.post("/enqueue", json={"id": "seed-dup", "payload": "a"})
    assert first.status_code == 201
    before = count_rows(module_db)
    second = server.client.post("/enqueue", json={"id": "seed-dup", "payload": "b"})
    assert second.status_code == 409
    assert second.json() == {
        "error": "task already exists",
        "code": "duplicate_key",
        "task_id": first.json()["id"],
    }
    assert count_rows(module_db) == before


def test_seed_invalid_json_is_400(server: Server, module_db: Database) -> None:
    before = count_rows(module_db)
    response = server.client.post("/enqueue", content=b'{"id": "x", ')
    assert response.status_code == 400
    assert response.json()["error"] == "invalid JSON"
    assert count_rows(module_db) == before


def test_seed_healthz(server: Server) -> None:
    response = server.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_seed_get_task_by_query(server: Server) -> None:
    created = server.client.post("/enqueue", json={"id": "seed-get", "payload": "some data"})
    task_id = created.json()["id"]
    response = server.client.get("/task", params={"id": task_id})
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == task_id
    assert body["payload"] == "some data"
    assert body["status"] == "new"
    assert body["attempts"] == 0
    assert body["max_retries"] == 3
    assert body["created_at"] is not None


def test_seed_get_task_missing_id_is_400(server: Server) -> None:
    response = server.client.get("/task")
    assert response.status_code == 400
    assert response.json() == {"error": "missing id parameter", "code": "invalid_request"}


def test_seed_get_task_unknown_is_404(server: Server) -> None:
    response = server.client.get("/task", params={"id": 987654321})
    assert response.status_code == 404
    assert response.json() == {"error": "task not found", "code": "task_not_found"}
