"""Tokens and roles: read may read, operator may also write; /healthz stays open."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Database
from tests.http.conftest import OPERATOR_TOKEN, READ_TOKEN, Server, count_rows

READS = [("GET", "/tasks"), ("GET", "/kinds"), ("GET", "/task?id=1"), ("GET", "/tasks/1"),
         ("GET", "/metrics"), ("GET", "/throughput"), ("GET", "/openapi.json"),
         ("GET", "/docs")]  # fmt: skip
WRITES = [("POST", "/enqueue"), ("POST", "/enqueue/batch"), ("POST", "/tasks/1/cancel"),
          ("POST", "/tasks/1/retry"),
          ("POST", "/kinds/email/retry"), ("POST", "/kinds/email/pause"),
          ("POST", "/kinds/email/resume"), ("PUT", "/kinds/email/limits")]  # fmt: skip


def call(server: Server, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body = {"tasks": [{"kind": "email"}]} if path.endswith("batch") else {"kind": "email"}
    if method == "GET":
        return server.client.get(path, headers=headers)
    if method == "PUT":
        return server.client.put(path, json={"global_concurrency": 3}, headers=headers)
    if path.endswith(("pause", "resume", "cancel", "retry")):
        return server.client.post(path, headers=headers)
    return server.client.post(path, json=body, headers=headers)


def test_healthz_needs_no_token(secured: Server) -> None:
    assert secured.client.get("/healthz").status_code == 200


@pytest.mark.parametrize(("method", "path"), READS + WRITES)
@pytest.mark.parametrize("token", [None, "wrong-token-0123", f"{READ_TOKEN}x", ""])
def test_missing_or_wrong_token_is_401(
    secured: Server, module_db: Database, method: str, path: str, token: str | None
) -> None:
    before = count_rows(module_db)
    response = call(secured, method, path, token)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthorized"
    assert count_rows(module_db) == before


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_read_token_may_not_write(
    secured: Server, module_db: Database, method: str, path: str
) -> None:
    before = count_rows(module_db)
    response = call(secured, method, path, READ_TOKEN)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert count_rows(module_db) == before


@pytest.mark.parametrize(("method", "path"), READS)
def test_read_and_operator_tokens_may_read(secured: Server, method: str, path: str) -> None:
    for token in (READ_TOKEN, OPERATOR_TOKEN):
        response = call(secured, method, path, token)
        assert response.status_code in (200, 404), (token, response.text)


def test_operator_token_may_write(secured: Server) -> None:
    created = call(secured, "POST", "/enqueue", OPERATOR_TOKEN)
    assert created.status_code == 201
    headers = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
    task_id = created.json()["id"]
    cancel = secured.client.post(f"/tasks/{task_id}/cancel", headers=headers)
    assert cancel.status_code == 200
    for action in ("pause", "resume", "retry"):
        assert secured.client.post(f"/kinds/email/{action}", headers=headers).status_code == 200


def test_scheme_is_case_insensitive_and_other_schemes_are_refused(secured: Server) -> None:
    ok = secured.client.get("/kinds", headers={"authorization": f"bearer {READ_TOKEN}"})
    assert ok.status_code == 200
    basic = secured.client.get("/kinds", headers={"authorization": f"Basic {READ_TOKEN}"})
    assert basic.status_code == 401
    query = secured.client.get("/kinds", params={"token": READ_TOKEN})
    assert query.status_code == 401


def test_open_server_needs_no_token(server: Server) -> None:
    assert server.client.get("/kinds").status_code == 200
