"""Regression tests of reliability defects, driven without a database: the thread pool never
starts a cancelled job, a notification during a claim is kept, ``time_left`` works off the event
loop, and bad input is refused with the library's own error before any SQL."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgqueue import KindOptions, LoopOptions, Task
from pgqueue.bounds import MAX_SECONDS
from pgqueue.envelope import Decision, Envelope
from pgqueue.errors import InvalidOptions, InvalidTask
from pgqueue.events import EventBus
from pgqueue.registry import KindRegistry, KindSpec
from pgqueue.runtime.execution import AttemptRunner
from pgqueue.runtime.producer import KindWorker
from pgqueue.runtime.threads import SyncThreadPool
from pgqueue.store.operations import delay_seconds, get_task, push_tasks, retry_tasks
from pgqueue.store.queries import Queries


def one_thread_pool() -> tuple[SyncThreadPool, Callable[[str], None], list[str], threading.Event]:
    """A pool of one thread and a job that records its name; the job named "first" holds the
    thread until the gate opens."""
    gate = threading.Event()
    ran: list[str] = []

    def job(name: str) -> None:
        ran.append(name)
        if name == "first":
            gate.wait(10)

    return SyncThreadPool(1), job, ran, gate


async def test_a_job_cancelled_before_a_thread_takes_it_never_runs() -> None:
    loop = asyncio.get_running_loop()
    pool, job, ran, gate = one_thread_pool()
    first = pool.submit(loop, job, "first")
    second = pool.submit(loop, job, "second")  # queued behind "first" on the only thread
    second.cancel()
    gate.set()
    await first
    await pool.submit(loop, job, "third")  # FIFO: "second" was taken (and skipped) before it
    pool.close()
    assert ran == ["first", "third"]


async def test_a_job_cancelled_on_the_loop_is_skipped_before_its_callback_runs() -> None:
    """Cancelling the future schedules the callback that cancels the job for the loop's next
    turn; a thread free before that turn must still skip the job (it once ran it)."""
    loop = asyncio.get_running_loop()
    pool, job, ran, gate = one_thread_pool()
    first, first_job = pool.submit_job(loop, job, "first")
    second, second_job = pool.submit_job(loop, job, "second")
    second.cancel()
    gate.set()
    # Block the loop (no callback runs) until the thread has dealt with both jobs.
    finished, _ = concurrent.futures.wait([first_job.future, second_job.future], timeout=10)
    assert len(finished) == 2
    await first
    pool.close()
    assert ran == ["first"]


async def test_a_job_reports_whether_a_thread_runs_it() -> None:
    loop = asyncio.get_running_loop()
    pool = SyncThreadPool(1)
    started, gate = threading.Event(), threading.Event()

    def job() -> None:
        started.set()
        gate.wait(10)

    future, job_handle = pool.submit_job(loop, job)
    await asyncio.to_thread(started.wait, 10)
    assert job_handle.running and not job_handle.cancel()  # too late: it runs
    future.cancel()
    assert not job_handle.returned.done()
    gate.set()
    await job_handle.returned  # resolves when the thread lets go, though nobody awaits `future`
    pool.close()


class ClaimingRuntime:
    """Just enough runtime for a claim loop: its executor answers claims with no rows (and the
    loop's read of limit overrides with none)."""

    def __init__(self) -> None:
        self.stopping = False
        self.events = EventBus()
        self.queries = {"claim_due_tasks": "claim", "read_kind_limits": "limits"}
        self.max_db_retry_delay = 1.0
        self.claims = 0
        self.second_claim = asyncio.Event()
        self.worker: KindWorker | None = None
        self.executor = self

    async def run(self, op: Any) -> Any:
        statement = next(op.steps)
        if statement.sql == "limits":
            try:
                op.steps.send([])
            except StopIteration as done:
                return done.value
        self.claims += 1
        if self.claims == 1:
            assert self.worker is not None
            self.worker.notify()  # a push lands while the first claim is in flight
        else:
            self.second_claim.set()
            self.stopping = True
        try:
            op.steps.send([])  # no rows: nothing claimed
        except StopIteration as done:
            return done.value
        raise AssertionError("the claim should take one statement")


async def test_a_notification_during_a_claim_is_not_lost() -> None:
    # The poll period is far away: only the notification can cause the second claim.
    options = KindOptions(attempt_timeout=5, loop=LoopOptions(poll_period=60.0)).validate()
    spec = KindSpec("k", options, lambda envelope: None)
    runtime = ClaimingRuntime()
    runner = AttemptRunner(spec, [], SyncThreadPool(1))
    worker = KindWorker(spec, runtime, runner, None)  # type: ignore[arg-type]
    runtime.worker = worker
    worker.notify()  # the process's due poller wakes an idle worker the same way
    loop_task = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):
        await runtime.second_claim.wait()
    worker.signal.set()
    await loop_task
    assert runtime.claims == 2


def test_time_left_works_in_a_sync_handler_thread() -> None:
    envelope = Envelope(
        id=1,
        kind="k",
        payload=None,
        external_key=None,
        attempt=1,
        attempts_left=0,
        max_attempts=1,
        deadline=datetime.now(UTC) + timedelta(seconds=30),
        monotonic_deadline=time.monotonic() + 30,
        messages=[],
    )
    seen: list[float] = []
    thread = threading.Thread(target=lambda: seen.append(envelope.time_left()))
    thread.start()
    thread.join()
    assert len(seen) == 1 and 0 < seen[0] <= 30


@pytest.mark.parametrize("delay", [1e12, 1e15, MAX_SECONDS + 1, timedelta(days=365 * 11)])
def test_delay_over_ten_years_is_refused(delay: Any) -> None:
    with pytest.raises(InvalidTask, match="at most"):
        delay_seconds(delay)


def test_delay_of_exactly_the_limit_is_accepted() -> None:
    assert delay_seconds(MAX_SECONDS) == MAX_SECONDS


@pytest.fixture
def registry() -> KindRegistry:
    registry = KindRegistry()
    registry.add("k", KindOptions(attempt_timeout=5), None)
    registry.add("capped", KindOptions(attempt_timeout=5, max_pending=10), None)
    return registry


@pytest.mark.parametrize("kind", ["k", "capped"])
def test_every_push_path_refuses_a_huge_delay_before_any_sql(
    registry: KindRegistry, kind: str
) -> None:
    queries = Queries("pgqueue")
    for tasks in ([Task(kind)], [Task(kind), Task(kind, external_key="x")]):
        with pytest.raises(InvalidTask, match="at most"):
            push_tasks(registry, queries, tasks, delay=1e15)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (Task("k", external_key="a\x00b"), "NUL"),
        (Task("k", external_key="x" * 513), "limit"),
        (Task("k", payload="\x00"), "NUL"),
        (Task("k", payload="x" * 1_048_577), "limit"),
        (Task("k", payload={1j}), "JSON"),
        (Task("k\x00"), "NUL"),
        (Task(""), "empty"),
    ],
)
def test_bad_task_fields_are_refused_before_any_sql(
    registry: KindRegistry, task: Task, message: str
) -> None:
    queries = Queries("pgqueue")
    for tasks in ([task], [task, Task("k")]):
        with pytest.raises(InvalidTask, match=message):
            push_tasks(registry, queries, tasks)


def test_out_of_range_numbers_never_reach_the_driver(registry: KindRegistry) -> None:
    queries = Queries("pgqueue")
    with pytest.raises(InvalidTask):
        retry_tasks(registry, queries, "k", attempts=2**31, limit=10)
    with pytest.raises(InvalidTask):
        retry_tasks(registry, queries, "k", attempts=1, limit=2**63)
    op = get_task(queries, 2**70)  # no such id can exist: answered without SQL
    with pytest.raises(StopIteration) as done:
        next(op.steps)
    assert done.value.value is None
    with pytest.raises(InvalidOptions):
        KindOptions(attempt_timeout=5, max_attempts=2**31).validate()
    with pytest.raises(InvalidOptions):
        KindOptions(attempt_timeout=1e12).validate()
    with pytest.raises(InvalidOptions):
        KindOptions(attempt_timeout=5, terminal_tasks_ttl=1e15).validate()
    with pytest.raises(InvalidOptions):
        KindOptions(attempt_timeout=5, max_task_error_messages=2**31).validate()
    with pytest.raises(ValueError, match="10 years"):
        Decision.retry_after(1e15)
