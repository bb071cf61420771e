"""``KindOptions(key_scope=...)``: how long an external key stays taken."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from pgqueue import Envelope, InvalidOptions, KindOptions, Queue, Status, Task
from pgqueue.testing import drain
from tests.conftest import Database

PUSHERS = 32


def options(**overrides: Any) -> KindOptions:
    return KindOptions(attempt_timeout=10, max_attempts=1, **overrides)


def push_concurrently(db: Database, queue: Queue, task: Task) -> list[int | None]:
    """PUSHERS transactions, each on its own connection, push ``task`` at the same moment (a
    barrier releases them together); the ids each one's committed push returned."""
    barrier = threading.Barrier(PUSHERS)
    results: list[int | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def pusher() -> None:
        try:
            with psycopg.connect(db.dsn) as conn:
                conn.execute("SELECT 1")  # connected and in a transaction before the barrier
                barrier.wait(10)
                task_id = queue.push_task_tx(conn, task)
                conn.commit()
            with lock:
                results.append(task_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pusher) for _ in range(PUSHERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert len(results) == PUSHERS
    return results


def test_while_active_32_pushers_make_one_task_then_one_more_after_it_ended(
    db: Database,
) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("debounce", lambda envelope: None, options(key_scope="while_active"))
        task = Task("debounce", {"n": 1}, external_key="user:7")
        first = [i for i in push_concurrently(db, queue, task) if i is not None]
        assert len(first) == 1
        assert queue.push_task(task) is None  # still waiting: the key is taken
        assert queue.push_tasks([task, Task("debounce", external_key="user:8")])[0] is None
        (run,) = [r for r in drain(queue, "debounce") if r.id == first[0]]
        assert run.status is Status.SUCCEEDED
        second = [i for i in push_concurrently(db, queue, task) if i is not None]
        assert len(second) == 1 and second[0] != first[0]
        rows = db.fetch(
            "SELECT id, status::text FROM {schema}.tasks WHERE external_key = 'user:7' ORDER BY id"
        )
        assert rows == [(first[0], "succeeded"), (second[0], "new")]
        # The key names the open task for cancel_task_by_key.
        assert queue.cancel_task_by_key("debounce", "user:7")
        assert queue.get_task(second[0]).status is Status.CANCELLED  # type: ignore[union-attr]


def test_while_active_holds_the_key_while_the_task_runs(db: Database) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(envelope: Envelope) -> None:
        started.set()
        release.wait(10)

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("slow", slow, options(key_scope="while_active"))
        task = Task("slow", external_key="k")
        task_id = queue.push_task(task)
        assert task_id is not None
        queue.start()
        assert started.wait(10)  # running its last attempt: status no_attempts_left, claimed
        assert queue.push_task(task) is None
        release.set()
        queue.wait(task_id, timeout=5)
        assert queue.push_task(task) is not None


def test_until_deleted_is_the_default_and_keeps_the_key_while_the_row_exists(
    db: Database,
) -> None:
    assert options().key_scope == "until_deleted"
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("once", lambda envelope: None, options())
        task = Task("once", external_key="welcome:1")
        ids = [i for i in push_concurrently(db, queue, task) if i is not None]
        assert len(ids) == 1
        drain(queue, "once")
        assert queue.push_task(task) is None  # ended, but its row is kept: still taken
        assert queue.push_tasks([task]) == [None]


def test_key_scope_is_validated(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue, pytest.raises(InvalidOptions, match="key_scope"):
        queue.register_kind("k", lambda envelope: None, options(key_scope="forever"))


@pytest.mark.parametrize("batch", [False, True], ids=["one task", "a batch"])
def test_a_while_active_push_keeps_priority_group_and_the_stored_times(
    db: Database, batch: bool
) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("scoped", options(key_scope="while_active"))
        tasks = [Task("scoped", {"n": 1}, "k1", priority=7, group="g1")]
        if batch:
            tasks.append(Task("scoped", {"n": 2}, "k2", priority=-3, group="g2"))
        ids = queue.push_tasks(tasks)
        assert None not in ids
        rows = db.fetch(
            "SELECT priority, task_group, key_while_active, created_at IS NOT NULL"
            " FROM {schema}.tasks ORDER BY id"
        )
    expected = [(7, "g1", True, True), (-3, "g2", True, True)]
    assert rows == expected[: len(tasks)]
