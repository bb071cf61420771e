"""The process-wide due poller: one statement per poll for every kind, on-time delayed tasks and
retries, and fairness between kinds of one process."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg

from pgqueue import AsyncQueue, Envelope, KindOptions, LoopOptions, Task
from pgqueue.adapters.psycopg import AsyncPsycopgExecutor
from pgqueue.delayer import Jitter, JitterDelayer
from pgqueue.runtime import poller
from pgqueue.store.executor import Operation
from pgqueue.store.queries import Queries
from tests.conftest import Database
from tests.helpers import CountingExecutor, Recorder

T = TypeVar("T")
SLOW_POLL = LoopOptions(poll_period=60.0, janitor_period=60.0)


def set_on_run(event: asyncio.Event) -> Callable[[Envelope], Awaitable[None]]:
    """An async handler (run on the event loop, where the event lives) that sets ``event``."""

    async def handler(envelope: Envelope) -> None:
        event.set()

    return handler


async def test_idle_process_polls_once_for_all_kinds_and_never_claims(db: Database) -> None:
    queries = Queries(db.schema)
    executor = CountingExecutor(AsyncPsycopgExecutor(db.dsn), queries)
    kinds = [f"kind-{i}" for i in range(500)]
    loop = LoopOptions(poll_period=0.05, janitor_period=600.0)
    async with AsyncQueue(executor, schema=db.schema) as queue:
        for kind in kinds:
            queue.register_kind(kind, lambda e: None, KindOptions(attempt_timeout=5, loop=loop))
        await queue.start()
        await executor.wait_for(lambda: executor.count("poll_due_kinds") >= 5)
        await queue.stop()
    polls = [params for name, params in executor.statements if name == "poll_due_kinds"]
    assert polls and all(sorted(params["kinds"]) == sorted(kinds) for params in polls)
    # Nothing was due, so no kind claimed: the kinds have no timer of their own.
    assert executor.count("claim_due_tasks") == 0, Counter(n for n, _ in executor.statements)


async def test_poller_wakes_only_the_kinds_with_due_work(db: Database) -> None:
    queries = Queries(db.schema)
    executor = CountingExecutor(AsyncPsycopgExecutor(db.dsn), queries)
    done = asyncio.Event()
    async with AsyncQueue(executor, schema=db.schema) as queue:
        for i in range(20):
            queue.register_kind(
                f"kind-{i}", set_on_run(done), KindOptions(attempt_timeout=5, loop=SLOW_POLL)
            )
        await queue.push_task(Task("kind-7"))  # nobody listens yet: the first poll finds it
        await queue.start()
        async with asyncio.timeout(30):
            await done.wait()
        await queue.stop()
    claimed = [params["kind"] for name, params in executor.statements if name == "claim_due_tasks"]
    assert set(claimed) == {"kind-7"}


async def three_delayed_tasks_started(db: Database, *, wait_listening: bool = False) -> set[Any]:
    """Push one task due in 0.5 s and two due in 0.8 s to a worker whose poll period is a
    minute (only the due-time wake-ups can start them in time); the payloads of those that
    started within 20 s."""
    started: dict[Any, float] = {}
    all_started = asyncio.Event()

    async def handler(envelope: Envelope) -> None:
        started[envelope.payload] = asyncio.get_running_loop().time()
        if len(started) == 3:
            all_started.set()

    async with AsyncQueue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", handler, KindOptions(attempt_timeout=5, loop=SLOW_POLL))
        await queue.start()
        if wait_listening:
            await queue.wait_listening()
        await queue.push_task(Task("k", "single"), delay=0.5)  # notifies its due time
        await queue.push_tasks([Task("k", "batch"), Task("k", "batch-2")], delay=0.8)
        async with asyncio.timeout(20):
            await all_started.wait()
        await queue.stop()
    return set(started)


async def test_delayed_task_runs_at_its_due_time_not_at_the_next_poll(db: Database) -> None:
    assert await three_delayed_tasks_started(db) == {"single", "batch", "batch-2"}


class LateSend:
    """An executor whose statements wait 20 ms before they are sent, as they wait for a pooled
    connection on a loaded machine."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def run(self, op: Operation[Any]) -> Any:
        await asyncio.sleep(0.02)
        return await self.inner.run(op)


async def test_a_task_due_while_its_kind_was_woken_a_moment_early_is_claimed_at_once(
    db: Database, monkeypatch: Any
) -> None:
    """The poller turns a notified due time into a time on the process's clock through its
    estimate of the database's clock, read halfway through a poll's round trip; a poll whose
    statement waited before it was sent skews the estimate, and the kind is woken a little
    before the task falls due. Its claim finds nothing, and the poll run at the same moment
    finds the task due: that poll must wake the kind again (it did not, as the kind had just
    been woken, and the task waited for the next poll, a minute later)."""
    init = poller.DuePoller.__init__

    def late_polls(self: poller.DuePoller, executor: Any, *args: Any, **kwargs: Any) -> None:
        init(self, LateSend(executor), *args, **kwargs)

    monkeypatch.setattr(poller.DuePoller, "__init__", late_polls)
    started = await three_delayed_tasks_started(db, wait_listening=True)
    assert started == {"single", "batch", "batch-2"}  # within 20 s: not a poll later


async def test_delayed_task_pushed_before_start_is_found_by_the_first_poll(db: Database) -> None:
    ran = asyncio.Event()
    async with AsyncQueue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", set_on_run(ran), KindOptions(attempt_timeout=5, loop=SLOW_POLL))
        # Pushed while no worker listens: the first poll learns its due time and polls again.
        await queue.push_task(Task("k"), delay=1.0)
        await queue.start()
        async with asyncio.timeout(20):
            await ran.wait()
        await queue.stop()


async def test_short_retry_runs_without_waiting_for_the_poll(db: Database) -> None:
    attempts: list[int] = []
    succeeded = asyncio.Event()

    async def handler(envelope: Envelope) -> None:
        attempts.append(envelope.attempt)
        if envelope.attempt == 1:
            raise ValueError("first attempt fails; the retry is due 0.3 s later")
        succeeded.set()

    options = KindOptions(
        attempt_timeout=5,
        max_attempts=3,
        delayer=JitterDelayer(jitter=Jitter.ZERO, base=0.3),
        loop=SLOW_POLL,
    )
    async with AsyncQueue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", handler, options)
        recorder = Recorder(queue)
        await queue.start()
        task_id = await queue.push_task(Task("k"))
        async with asyncio.timeout(20):
            await succeeded.wait()
        await recorder.await_status(task_id, "succeeded", timeout=20)
        await queue.stop()
    assert attempts == [1, 2]


async def test_small_kinds_finish_while_a_big_kind_has_a_backlog(db: Database) -> None:
    big_total = 20_000
    small_kinds = [f"small-{i}" for i in range(9)]
    small_left = dict.fromkeys(small_kinds, 100)
    big_done_when_small_finished: list[int] = []
    big_done = 0
    small_finished = asyncio.Event()

    async def big(envelope: Envelope) -> None:
        nonlocal big_done
        big_done += 1

    async def small(envelope: Envelope) -> None:
        small_left[envelope.kind] -= 1
        if not any(small_left.values()) and not small_finished.is_set():
            big_done_when_small_finished.append(big_done)
            small_finished.set()

    loop = LoopOptions(poll_period=1.0, janitor_period=600.0)
    options = KindOptions(attempt_timeout=30, terminal_tasks_ttl=0, loop=loop)
    async with AsyncQueue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("big", big, options)
        for kind in small_kinds:
            queue.register_kind(kind, small, options)
        await queue.push_tasks([Task("big", i) for i in range(big_total)])
        await queue.start()  # the big kind starts on its backlog first
        for kind in small_kinds:
            await queue.push_tasks([Task(kind, i) for i in range(100)])
        async with asyncio.timeout(120):
            await small_finished.wait()
        await queue.stop()
    # Every small kind finished while the big kind still had most of its backlog left.
    assert big_done_when_small_finished[0] < big_total // 2, big_done_when_small_finished


def test_poll_statement_probes_the_open_tasks_index_per_kind(db: Database) -> None:
    queries = Queries(db.schema)
    kinds = [f"kind-{i}" for i in range(500)]
    with psycopg.connect(db.dsn) as conn:
        # Many rows per kind, finished, due and future: the plan must probe the index per kind.
        conn.execute(
            f"""INSERT INTO {db.schema}.tasks (kind, status, attempts_left, max_attempts,
                    delayed_till, finished_at)
                SELECT 'kind-' || (g % 500),
                       CASE WHEN g % 3 = 0 THEN 'succeeded' ELSE 'new' END::{db.schema}.task_status,
                       1, 1, now() + (g % 7 - 3) * interval '1 hour', now()
                FROM generate_series(1, 100000) g"""
        )
        conn.execute(f"ANALYZE {db.schema}.tasks")
        for name, params in (
            ("poll_due_kinds", {"kinds": kinds, "floors": [None] * len(kinds)}),
            (
                "find_sweepable_kinds",
                {"kinds": kinds, "ttls": [60.0] * len(kinds), "windows": [60.0] * len(kinds)},
            ),
        ):
            rows = conn.execute(
                "EXPLAIN (FORMAT JSON) " + queries[name], params, prepare=False
            ).fetchone()
            plan = json.dumps(rows[0] if rows else None)
            assert '"Seq Scan"' not in plan, (name, plan)
            index = "tasks_open_idx" if name == "poll_due_kinds" else "tasks_terminal_idx"
            assert index in plan, (name, plan)
        clock, due_kinds, next_due_in, next_kind, _, _ = conn.execute(
            queries["poll_due_kinds"], {"kinds": kinds, "floors": [None] * len(kinds)}
        ).fetchone()  # type: ignore[misc]
        conn.rollback()
    assert clock > 0
    assert sorted(due_kinds) == sorted(kinds)
    assert 0 < next_due_in <= 3600
    assert next_kind in kinds
