"""Results: a handler's return value stored with the success, under a size cap."""

from __future__ import annotations

from typing import Any

import pytest

from pgqueue import Envelope, InvalidOptions, KindOptions, Queue, Status, Task
from pgqueue.testing import drain
from tests.conftest import Database


def options(**overrides: Any) -> KindOptions:
    return KindOptions(attempt_timeout=10, max_attempts=1, **overrides)


def returned(envelope: Envelope) -> Any:
    return envelope.payload["value"]


def test_a_returned_value_is_stored_with_the_success(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("echo", returned, options())
        values = [{"rows": 42, "names": ["ä", "b"]}, [1, 2.5, None], "text", 7, True]
        ids = queue.push_tasks([Task("echo", {"value": v}) for v in values])
        drained = drain(queue, "echo")
        assert [t.result for t in drained] == values
        for task_id, value in zip(ids, values, strict=True):
            assert task_id is not None
            info = queue.get_task(task_id)
            assert info is not None and info.status is Status.SUCCEEDED
            assert info.result == value
        listed = {t.id: t.result for t in queue.list_tasks(kind="echo")}
        assert listed == dict(zip(ids, values, strict=True))


def test_none_stores_no_result(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("echo", returned, options())
        task_id = queue.push_task(Task("echo", {"value": None}))
        assert task_id is not None
        drain(queue, "echo")
        assert queue.get_task(task_id).result is None  # type: ignore[union-attr]
        assert db.scalar("SELECT result IS NULL FROM {schema}.tasks WHERE id = %s", (task_id,))


def test_a_value_that_is_not_json_fails_the_attempt_naming_its_type(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("bad", lambda envelope: {"when": {1, 2}}, options())
        task_id = queue.push_task(Task("bad"))
        assert task_id is not None
        (run,) = drain(queue, "bad")
        assert run.status is Status.NO_ATTEMPTS_LEFT
        assert run.error is not None
        assert run.error.startswith("InvalidResult: the handler returned a dict")
        assert "set" in run.error
        info = queue.get_task(task_id)
        assert info is not None and info.result is None and info.messages == [run.error]


def test_a_result_over_the_cap_fails_the_attempt_naming_its_size(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("big", returned, options(max_result_bytes=100))
        fits, over = "x" * 98, "y" * 99  # 100 and 101 bytes as JSON (with the quotes)
        queue.push_tasks([Task("big", {"value": fits}), Task("big", {"value": over})])
        first, second = drain(queue, "big")
        assert first.status is Status.SUCCEEDED and first.result == fits
        assert second.status is Status.NO_ATTEMPTS_LEFT
        assert second.error == (
            "InvalidResult: the handler's result is 101 bytes as JSON, over the kind's"
            " max_result_bytes of 100"
        )


def test_the_default_cap_is_one_mebibyte(db: Database) -> None:
    assert options().max_result_bytes == 1_048_576
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("big", lambda envelope: "z" * envelope.payload, options())
        queue.push_tasks([Task("big", 1_048_576 - 2), Task("big", 1_048_575)])
        first, second = drain(queue, "big")
        assert first.status is Status.SUCCEEDED and len(first.result) == 1_048_574
        assert second.status is Status.NO_ATTEMPTS_LEFT
        assert second.error is not None and "1,048,577 bytes" in second.error


@pytest.mark.parametrize("bad", [-1, 1.5, True, 65 * 1_048_576])
def test_max_result_bytes_is_validated(db: Database, bad: Any) -> None:
    with (
        Queue(db.dsn, schema=db.schema) as queue,
        pytest.raises(InvalidOptions, match="max_result_bytes"),
    ):
        queue.register_kind("k", returned, options(max_result_bytes=bad))
