"""``queue.wait``: returns once the task ended, over one LISTEN connection per queue."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

from pgqueue import (
    AsyncQueue,
    Envelope,
    InvalidTask,
    KindOptions,
    LoopOptions,
    Queue,
    Status,
    Task,
    UnknownTask,
    WaitTimeout,
)
from pgqueue.adapters.psycopg import AsyncPsycopgExecutor
from pgqueue.store.queries import Queries
from pgqueue.testing import drain
from tests.conftest import Database
from tests.helpers import CountingExecutor

FAST = LoopOptions(poll_period=0.2, janitor_period=60, lease_margin=4.0)


def options(**overrides: Any) -> KindOptions:
    return KindOptions(attempt_timeout=10, max_attempts=1, loop=FAST, **overrides)


def returned(envelope: Envelope) -> Any:
    return envelope.payload["value"]


def listeners(db: Database) -> int:
    """Backends of the server that LISTEN on this schema's channel of ended tasks."""
    return int(
        db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
            (f'LISTEN "pgqueue_{db.schema}_finished"',),
        )
    )


def test_wait_returns_the_ended_task_with_its_result(db: Database) -> None:
    release = threading.Event()

    def gated(envelope: Envelope) -> Any:
        release.wait(10)
        return {"rows": envelope.payload}

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("gated", gated, options())
        task_id = queue.push_task(Task("gated", 42))
        assert task_id is not None
        queue.start()
        with pytest.raises(WaitTimeout) as timed_out:
            queue.wait(task_id, timeout=0.2)  # still running: the handler waits for release
        assert isinstance(timed_out.value, TimeoutError)
        assert str(timed_out.value) == f"task {task_id} did not end within 0.2s"
        release.set()
        info = queue.wait(task_id, timeout=4)
        assert info.status is Status.SUCCEEDED and info.result == {"rows": 42}
        # An ended task returns at once, as does a wait after the queue stopped.
        queue.stop()
        assert queue.wait(task_id).result == {"rows": 42}


def test_an_unknown_id_raises_at_once(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        with pytest.raises(UnknownTask, match="no task with id 123456789"):
            queue.wait(123456789, timeout=None)
        with pytest.raises(InvalidTask, match="task id must be a positive"):
            queue.wait(0)
        with pytest.raises(ValueError, match="timeout must be"):
            queue.wait(1, timeout=-1)


def test_failed_and_cancelled_tasks_end_a_wait(db: Database) -> None:
    def failing(envelope: Envelope) -> None:
        raise RuntimeError("boom")

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("failing", failing, options())
        queue.declare_kind("idle", options())
        failed = queue.push_task(Task("failing"))
        waiting = queue.push_task(Task("idle"), delay=3600)
        assert failed is not None and waiting is not None
        queue.start()
        info = queue.wait(failed, timeout=4)
        assert info.status is Status.NO_ATTEMPTS_LEFT and info.messages == ["RuntimeError: boom"]
        done: list[Any] = []
        waiter = threading.Thread(target=lambda: done.append(queue.wait(waiting, timeout=4)))
        waiter.start()
        while not queue._waiters or waiting not in queue._waiters.watches:
            threading.Event().wait(0.01)
        assert queue.cancel_task(waiting)
        waiter.join(10)
        assert [i.status for i in done] == [Status.CANCELLED]


def test_waiters_of_a_kind_deleted_at_once_get_outcome_and_result(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("gone", returned, options(terminal_tasks_ttl=0))
        gone = queue.push_tasks(
            [Task("gone", {"value": {"n": 2}}), Task("gone", {"value": None})], delay=0.5
        )
        results: dict[int, Any] = {}

        def wait(task_id: int) -> None:
            results[task_id] = queue.wait(task_id, timeout=4)

        threads = [threading.Thread(target=wait, args=(task_id,)) for task_id in gone]
        for thread in threads:
            thread.start()
        queue.start()
        for thread in threads:
            thread.join(10)
        first, second = (results[task_id] for task_id in gone)  # type: ignore[index]
        assert first.status is Status.SUCCEEDED and first.result == {"n": 2}
        assert first.kind == "gone" and first.payload == {"value": {"n": 2}}
        assert second.status is Status.SUCCEEDED and second.result is None
    assert db.scalar("SELECT count(*) FROM {schema}.tasks") == 0
    # The outcomes of the waited tasks were kept a while, for their waiters.
    assert db.fetch(
        "SELECT id, kind, status, result FROM {schema}.finished_results ORDER BY id"
    ) == [
        (gone[0], "gone", "succeeded", {"n": 2}),
        (gone[1], "gone", "succeeded", None),
    ]


def test_many_waiters_share_one_listening_connection(db: Database) -> None:
    async def scenario() -> None:
        async with AsyncQueue(db.dsn, schema=db.schema) as queue:
            queue.register_kind("echo", returned, options(worker_count=20))
            ids = await queue.push_tasks(
                [Task("echo", {"value": i}) for i in range(300)], delay=0.5
            )
            waits = [asyncio.ensure_future(queue.wait(i, timeout=30)) for i in ids]  # type: ignore[arg-type]
            await queue.start()
            infos = await asyncio.gather(*waits)
            assert [info.result for info in infos] == list(range(300))
            assert queue._waiters is not None
            assert queue._waiters.listener_connections == 1
            assert listeners(db) == 1
            assert not queue._waiters.watches

    asyncio.run(scenario())


def expand(payload: str) -> dict[int, str]:
    """The ids an announcement names, with their status letters."""
    runs = payload[2:]
    if payload.startswith("F:"):
        runs = runs.partition(":")[0]
    named: dict[int, str] = {}
    for run in runs.split(","):
        first, _, last = run[:-1].partition("-")
        for task_id in range(int(first), int(last or first) + 1):
            named[task_id] = run[-1]
    return named


def test_result_statements_announce_waited_tasks_once_in_runs_and_no_others(
    db: Database,
) -> None:
    def failing(envelope: Envelope) -> None:
        raise RuntimeError("boom")

    async def scenario() -> tuple[list[int], list[int]]:
        async with AsyncQueue(db.dsn, schema=db.schema) as queue:
            queue.register_kind("gone", returned, options(terminal_tasks_ttl=0))
            queue.register_kind("failing", failing, options())
            tasks = [Task("gone", {"value": i}) for i in range(40)]
            tasks[10:15] = [Task("failing") for _ in range(5)]  # breaks the run of ids
            ids = await queue.push_tasks(tasks, delay=0.3)
            unwaited = await queue.push_tasks([Task("gone", {"value": 0})] * 5, delay=0.3)
            waits = [asyncio.ensure_future(queue.wait(i, timeout=4)) for i in ids]  # type: ignore[arg-type]
            await queue.start()
            for info, n in zip(await asyncio.gather(*waits), range(40), strict=True):
                assert info.result == (None if 10 <= n < 15 else n)
            waiting = await queue.push_task(Task("failing"), delay=60)
            assert waiting is not None
            cancelled = asyncio.ensure_future(queue.wait(waiting, timeout=4))
            while waiting not in queue._waiters.watches:  # type: ignore[union-attr]
                await asyncio.sleep(0.01)
            await queue.cancel_task(waiting)
            assert (await cancelled).status is Status.CANCELLED
            return [*ids, waiting], unwaited  # type: ignore[list-item]

    with psycopg.connect(db.dsn, autocommit=True) as listener:
        listener.execute(f'LISTEN "pgqueue_{db.schema}_finished"')
        waited, unwaited = asyncio.run(scenario())
        payloads = [n.payload for n in listener.notifies(timeout=1.0)]
    announced: dict[int, str] = {}
    for payload in payloads:
        named = expand(payload)
        assert not announced.keys() & named.keys(), "an id announced twice"
        announced.update(named)
        if payload.startswith("F:"):
            assert payload.endswith(":gone")
    expected = {task_id: "n" if 10 <= n < 15 else "S" for n, task_id in enumerate(waited[:40])}
    assert announced == {**expected, waited[40]: "c"}
    assert not announced.keys() & set(unwaited)  # nobody waited on them: no announcement
    assert len(payloads) < len(waited) / 2  # runs, not one notification per task


def test_a_wait_after_a_deleted_task_ended_raises_unknown_task(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("gone", returned, options(terminal_tasks_ttl=0))
        task_id = queue.push_task(Task("gone", {"value": 1}))
        assert task_id is not None
        drain(queue, "gone")
        with pytest.raises(UnknownTask, match=f"no task with id {task_id}"):
            queue.wait(task_id, timeout=1)


async def test_a_task_skipped_by_a_claim_while_a_wait_marked_it_runs_once_the_mark_commits(
    db: Database,
) -> None:
    """``wait`` marks its task's row. A claim that runs while the mark holds the row skips it
    (``SKIP LOCKED``), and with nothing else due the claim loop has no reason to claim again
    until the next poll, a minute here. The mark's commit wakes the kind (reading from the
    index's head, below the floor the skipping claim may have left), so the task runs at once.
    The mark is held open in a transaction of its own to make the claim meet it."""
    queries = Queries(db.schema)
    executor = CountingExecutor(AsyncPsycopgExecutor(db.dsn), queries)
    ran = asyncio.Event()

    async def handler(envelope: Envelope) -> None:
        ran.set()

    slow_poll = LoopOptions(poll_period=60.0, janitor_period=60.0)
    async with AsyncQueue(executor, schema=db.schema) as queue:
        queue.register_kind("k", handler, KindOptions(attempt_timeout=5, loop=slow_poll))
        await queue.start()
        await queue.wait_listening()
        await queue.pause_kind("k")  # nothing claims until the mark is held
        task_id = await queue.push_task(Task("k"))
        assert task_id is not None
        async with await psycopg.AsyncConnection.connect(db.dsn) as mark:
            await mark.execute(
                queries["mark_task_waited"], {"id": task_id, "channel": queries.channel}
            )
            start = len(executor.statements)
            await queue.resume_kind("k")
            # A claim sent after the resume committed sees the kind unpaused and the row locked.
            await executor.wait_for(lambda: executor.finished_since("claim_due_tasks", start) > 0)
            assert not ran.is_set()
            await mark.commit()
        async with asyncio.timeout(10):
            await ran.wait()
        await queue.stop()
