"""The bad-input catalogue: each case gets its documented status and writes no row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Database
from tests.http.conftest import APP, Server, count_rows, start_server


@pytest.fixture
def rows_unchanged(module_db: Database) -> Iterator[None]:
    before = count_rows(module_db)
    yield
    assert count_rows(module_db) == before, "a rejected request wrote a row"


def post(server: Server, path: str, content: bytes) -> httpx.Response:
    return server.client.post(path, content=content, headers={"content-type": "application/json"})


def assert_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str) and isinstance(body["code"], str)
    return body  # type: ignore[no-any-return]


@pytest.mark.usefixtures("rows_unchanged")
@pytest.mark.parametrize("content", [b"not json", b"{", b"", b"\xff\xfe", b'{"kind": "email",}'])
def test_non_json_body_is_400(server: Server, content: bytes) -> None:
    assert_error(post(server, "/enqueue", content), 400)
    assert_error(post(server, "/enqueue/batch", content), 400)


@pytest.mark.usefixtures("rows_unchanged")
@pytest.mark.parametrize(
    "content",
    [
        b"[]",
        b'"a string"',
        b"42",
        b"null",
        b'{"kind": 5}',
        b'{"kind": ["email"]}',
        b'{"external_key": 7}',
        b'{"delay": "5"}',
        b'{"max_attempts": "3"}',
        b'{"max_attempts": 2.5}',
        b'{"max_attempts": true}',
        b'{"max_attempts": 0}',
    ],
)
def test_json_of_the_wrong_type_is_400(server: Server, content: bytes) -> None:
    assert_error(post(server, "/enqueue", content), 400)


@pytest.mark.usefixtures("rows_unchanged")
def test_batch_of_the_wrong_type_is_400(server: Server) -> None:
    for content in (b'{"tasks": {}}', b'{"tasks": [1, 2]}', b"[]", b'{"tasks": "x"}'):
        assert_error(post(server, "/enqueue/batch", content), 400)


@pytest.mark.usefixtures("rows_unchanged")
def test_huge_body_is_413_before_parsing(server: Server) -> None:
    # Over the default 1 MiB, and not even JSON: refused on its declared length, unparsed.
    body = assert_error(post(server, "/enqueue", b"x" * (1_048_576 + 1)), 413)
    assert body["code"] == "payload_too_large"


@pytest.mark.usefixtures("rows_unchanged")
def test_huge_chunked_body_is_413(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 65536  # 1.25 MiB of whitespace in total, no Content-Length

    response = server.client.post(
        "/enqueue", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413)


@pytest.mark.usefixtures("rows_unchanged")
def test_payload_within_body_limit_but_over_payload_limit_is_413_or_400(server: Server) -> None:
    # A 1 MiB payload string makes a body just over the limit: still 413, never 500.
    body = b'{"payload": "' + b"a" * 1_048_576 + b'"}'
    assert_error(post(server, "/enqueue", body), 413)


@pytest.mark.usefixtures("rows_unchanged")
@pytest.mark.parametrize(
    "content",
    [
        b'{"kind": "em\\u0000ail"}',
        b'{"external_key": "k\\u0000"}',
        b'{"id": "\\u0000"}',
        b'{"kind": "email", "payload": "a\\u0000b"}',
        b'{"kind": "email", "payload": {"k\\u0000": 1}}',
    ],
)
def test_nul_in_strings_is_400(server: Server, content: bytes) -> None:
    assert_error(post(server, "/enqueue", content), 400)


@pytest.mark.usefixtures("rows_unchanged")
def test_nul_in_query_strings_is_400(server: Server) -> None:
    assert_error(server.client.get("/tasks", params={"kind": "a\0b"}), 400)
    assert_error(server.client.get("/tasks", params={"key_prefix": "a\0"}), 400)
    assert_error(server.client.get("/tasks", params={"payload": '{"a": "\\u0000"}'}), 400)


@pytest.mark.usefixtures("rows_unchanged")
def test_unknown_fields_are_rejected_with_400(server: Server) -> None:
    body = assert_error(post(server, "/enqueue", b'{"kind": "email", "priority": 5}'), 400)
    assert "priority" in str(body["error"])
    assert_error(post(server, "/enqueue/batch", b'{"tasks": [{"kind": "email", "x": 1}]}'), 400)
    assert_error(post(server, "/enqueue/batch", b'{"tasks": [{"kind": "email"}], "x": 1}'), 400)


@pytest.mark.usefixtures("rows_unchanged")
@pytest.mark.parametrize("delay", [b"-1", b"-0.001", b"1e308", b"NaN", b"Infinity"])
def test_negative_or_non_finite_delay_is_400(server: Server, delay: bytes) -> None:
    assert_error(post(server, "/enqueue", b'{"kind": "email", "delay": ' + delay + b"}"), 400)
    batch = b'{"tasks": [{"kind": "email"}], "delay": ' + delay + b"}"
    assert_error(post(server, "/enqueue/batch", batch), 400)


@pytest.mark.usefixtures("rows_unchanged")
@pytest.mark.parametrize("kind", [b'""', b'"   "', b'"' + b"k" * 101 + b'"'])
def test_empty_or_overlong_kind_is_400(server: Server, kind: bytes) -> None:
    assert_error(post(server, "/enqueue", b'{"kind": ' + kind + b"}"), 400)


@pytest.mark.usefixtures("rows_unchanged")
def test_overlong_external_key_is_400(server: Server) -> None:
    key = b'"' + b"k" * 513 + b'"'
    assert_error(post(server, "/enqueue", b'{"kind": "email", "external_key": ' + key + b"}"), 400)
    # 200 three-byte characters: 600 bytes, over the 512-byte limit though under 512 chars.
    wide = '{"kind": "email", "external_key": "' + "\u20ac" * 200 + '"}'
    assert_error(post(server, "/enqueue", wide.encode()), 400)


@pytest.mark.usefixtures("rows_unchanged")
@pytest.mark.parametrize("task_id", ["abc", "1.5", "-1", "0", "99999999999999999999", "1e3"])
def test_id_not_a_positive_integer_is_400(server: Server, task_id: str) -> None:
    assert_error(server.client.get(f"/tasks/{task_id}"), 400)
    assert_error(server.client.post(f"/tasks/{task_id}/cancel"), 400)


@pytest.mark.usefixtures("rows_unchanged")
@pytest.mark.parametrize("task_id", ["abc", "1.5", "1e3", " "])
def test_seed_query_id_not_an_integer_is_400(server: Server, task_id: str) -> None:
    assert_error(server.client.get("/task", params={"id": task_id}), 400)


def test_body_limit_is_configurable(module_db: Database, tmp_path: Path) -> None:
    small = start_server(module_db, tmp_path, "--app", APP, env={"PGQUEUE_MAX_BODY_BYTES": "2048"})
    try:
        before = count_rows(module_db)
        big = small.client.post("/enqueue", json={"kind": "email", "payload": "a" * 3000})
        assert_error(big, 413)
        assert count_rows(module_db) == before
        ok = small.client.post("/enqueue", json={"kind": "email", "payload": "a" * 1000})
        assert ok.status_code == 201
    finally:
        assert small.stop() == 0
