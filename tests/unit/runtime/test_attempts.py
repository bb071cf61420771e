"""The attempt path of the worker runtime, driven without a database: deadlines enforced by one
timer per kind, cancellation, and buffered claims started as attempts finish."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from pgqueue import KindOptions, LoopOptions, Status
from pgqueue.events import EventBus
from pgqueue.options import PREFETCH_WINDOW
from pgqueue.registry import KindSpec
from pgqueue.runtime.completer import Result
from pgqueue.runtime.execution import AttemptRunner, DeadlineGuard
from pgqueue.runtime.producer import KindWorker
from pgqueue.runtime.threads import SyncThreadPool

TOKEN = "0b7e7e57-1111-2222-3333-444455556666"


class FakeWriter:
    def __init__(self) -> None:
        self.results: list[Result] = []
        self.changed = asyncio.Event()

    def submit(self, result: Result) -> None:
        self.results.append(result)
        self.changed.set()

    async def wait_for(self, count: int) -> list[Result]:
        async with asyncio.timeout(10):
            while len(self.results) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.results


class FakeRuntime:
    """What a KindWorker needs of its runtime, with no claim loop and no database."""

    def __init__(self) -> None:
        self.stopping = False
        self.events = EventBus()
        self.writer = FakeWriter()
        self.released: list[tuple[int, str]] = []

    def release_later(self, claims: list[tuple[int, str]]) -> None:
        self.released.extend(claims)


def row(task_id: int, payload: Any = None) -> tuple[Any, ...]:
    # The columns claim_due_tasks returns (the payload as JSON text).
    text = None if payload is None else json.dumps(payload)
    return (task_id, text, None, 1, 2, 3, TOKEN, [], datetime.now(UTC), False, 0, None, None)


def make_worker(handler: Any, **options: Any) -> tuple[KindWorker, FakeRuntime]:
    options.setdefault("attempt_timeout", 5)
    spec = KindSpec("k", KindOptions(**options).validate(), handler)
    runtime = FakeRuntime()
    runner = AttemptRunner(spec, [], SyncThreadPool(2))
    return KindWorker(spec, runtime, runner, runtime.writer), runtime  # type: ignore[arg-type]


async def test_buffered_claims_start_as_attempts_finish_without_the_claim_loop() -> None:
    ran: list[int] = []

    async def handler(envelope: Any) -> None:
        await asyncio.sleep(0)
        ran.append(envelope.id)

    worker, runtime = make_worker(handler, worker_count=2)
    now = asyncio.get_running_loop().time()
    worker.buffer.extend((row(i), now) for i in range(30))
    # What one turn of the claim loop does; it never runs again here.
    worker._start_buffered(worker._current_size())
    assert len(worker.inflight) == 2
    results = await runtime.writer.wait_for(30)
    assert sorted(ran) == list(range(30))
    assert [r.outcome.status for r in results] == [Status.SUCCEEDED] * 30
    assert not worker.buffer and not worker.inflight


async def test_one_timer_enforces_every_deadline_in_start_order() -> None:
    async def handler(envelope: Any) -> None:
        if envelope.payload == "hang":
            await asyncio.Event().wait()
        await asyncio.sleep(0.05 * envelope.payload)

    worker, runtime = make_worker(handler, worker_count=4, attempt_timeout=0.3)
    loop = asyncio.get_running_loop()
    now = loop.time()
    worker.buffer.extend((row(i, p), now) for i, p in enumerate(["hang", 1, "hang", 2]))
    worker._start_buffered(4)
    results = {r.task_id: r for r in await runtime.writer.wait_for(4)}
    assert loop.time() - now < 2
    assert {i: r.outcome.status for i, r in results.items()} == {
        0: Status.MUST_RETRY,
        1: Status.SUCCEEDED,
        2: Status.MUST_RETRY,
        3: Status.SUCCEEDED,
    }
    for hung in (0, 2):
        assert results[hung].outcome.error == "AttemptTimeout: attempt timed out after 0.3s"
    assert worker._watchdog is None  # nothing left to watch: the timer is not re-armed


async def test_a_late_start_times_out_without_running_the_handler() -> None:
    ran: list[int] = []

    async def handler(envelope: Any) -> None:
        ran.append(envelope.id)

    worker, runtime = make_worker(handler, attempt_timeout=0.2)
    attempt_deadline_passed = row(7)
    now = asyncio.get_running_loop().time()
    worker._start(attempt_deadline_passed, now - 0.5, now - 0.5)
    (result,) = await runtime.writer.wait_for(1)
    assert ran == []
    assert result.outcome.error == "AttemptTimeout: attempt timed out after 0.2s"


async def test_cancel_interrupts_a_running_handler() -> None:
    started = asyncio.Event()

    async def handler(envelope: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    worker, runtime = make_worker(handler, attempt_timeout=30)
    worker.buffer.append((row(1), asyncio.get_running_loop().time()))
    worker._start_buffered(1)
    await started.wait()
    worker.cancel(1)
    (result,) = await runtime.writer.wait_for(1)
    assert result.outcome.status is Status.CANCELLED


class DroppingHandler:
    """An async handler that loses the first cancellation it gets (as Python 3.11's
    ``asyncio.wait_for`` can: CPython gh-86296), then runs on for 30 s."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.dropped = 0

    async def __call__(self, envelope: Any) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.dropped += 1
        await asyncio.sleep(30)


async def test_a_cancelled_handler_that_drops_the_cancellation_is_cancelled_again() -> None:
    """A cancel from the database fires the guard long before the deadline; a handler that
    loses that cancellation (CPython gh-86296) is cancelled again, not left to its deadline."""
    handler = DroppingHandler()
    worker, runtime = make_worker(handler, attempt_timeout=60)
    loop = asyncio.get_running_loop()
    worker.buffer.append((row(1), loop.time()))
    worker._start_buffered(1)
    await handler.started.wait()
    began = loop.time()
    worker.cancel(1)
    (result,) = await runtime.writer.wait_for(1)
    assert handler.dropped == 1
    assert result.outcome.status is Status.CANCELLED
    assert loop.time() - began < 2


async def test_guard_fired_outside_its_region_does_nothing() -> None:
    guard = DeadlineGuard()
    guard.fire()  # not inside: no cancellation is requested
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    guard.enter()
    assert guard.leave() is False
    guard.fire()
    assert current.cancelling() == 0


async def guarded(guard: DeadlineGuard, entered: asyncio.Event, drops: int = 0) -> str:
    """A handler region under ``guard`` that drops its first ``drops`` cancellations."""
    guard.enter()
    try:
        for _ in range(drops):
            try:
                entered.set()
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass  # lost, as Python 3.11's wait_for can lose it
        entered.set()
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if guard.leave():
            return "timed out"
        raise
    return "finished"


async def test_guard_does_not_swallow_a_cancellation_that_is_not_its_own() -> None:
    guard = DeadlineGuard()
    entered = asyncio.Event()
    task = asyncio.create_task(guarded(guard, entered))
    await entered.wait()
    guard.fire()
    assert await task == "timed out"

    guard = DeadlineGuard()
    entered.clear()
    task = asyncio.create_task(guarded(guard, entered))
    await entered.wait()
    guard.fire()
    task.cancel()  # someone else cancels too (a queue abort): that one must propagate
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    ("average", "expected"),
    [
        (None, 0),  # nothing known yet: claim only for idle workers
        (0.2, 0),  # long attempts stay in the table for other processes
        (0.04, 20),  # short: at least twice worker_count
        (0.001, 250),  # very short: the window of work
        (0.0001, 1000),  # shorter still: the window, capped at claim_batch_size
        (0.0025, int(10 * PREFETCH_WINDOW / 0.0025)),
    ],
)
def test_adaptive_prefetch(average: float | None, expected: int) -> None:
    assert LoopOptions().prefetch_for(10, average) == expected
    assert LoopOptions(prefetch=3).prefetch_for(10, average) == 3


async def test_a_handler_that_drops_the_deadline_cancellation_is_cancelled_again() -> None:
    """On Python 3.11 ``asyncio.wait_for`` (which drivers use) can drop a cancellation that
    lands as its result arrives (CPython gh-86296): the handler then runs on past its deadline.
    The worker cancels a fired attempt again until it leaves its handler."""
    handler = DroppingHandler()
    worker, runtime = make_worker(handler, attempt_timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    worker.buffer.append((row(1), started))
    worker._start_buffered(1)
    (result,) = await runtime.writer.wait_for(1)
    assert handler.dropped == 1
    assert result.outcome.error == "AttemptTimeout: attempt timed out after 0.2s"
    assert loop.time() - started < 2
    assert worker._watchdog is None


async def test_a_second_fire_counts_as_the_guards_own() -> None:
    guard = DeadlineGuard()
    entered = asyncio.Event()
    task = asyncio.create_task(guarded(guard, entered, drops=1))
    await entered.wait()
    entered.clear()
    guard.fire()  # dropped
    await entered.wait()
    guard.fire()  # still inside: cancelled again
    assert await task == "timed out"
    assert task.cancelling() == 0


async def test_abort_ends_a_handler_that_drops_the_cancellation() -> None:
    handler = DroppingHandler()
    worker, _ = make_worker(handler, attempt_timeout=60)
    loop = asyncio.get_running_loop()
    worker.buffer.append((row(1), loop.time()))
    worker._start_buffered(1)
    await handler.started.wait()
    began = loop.time()
    claims = await asyncio.wait_for(worker.abort(), 5)
    assert handler.dropped == 1
    assert [task_id for task_id, _ in claims] == [1]
    assert loop.time() - began < 2


EAGER = sys.version_info >= (3, 12)


async def test_a_handler_runs_in_its_own_task_from_its_first_line() -> None:
    # Python 3.12 starts an attempt eagerly, in the turn that starts it: the handler's first
    # lines must still see its own task, or asyncio.timeout in them would cancel the caller.
    seen: list[str] = []
    outer = asyncio.current_task()

    async def handler(envelope: Any) -> None:
        task = asyncio.current_task()
        assert task is not None and task is not outer
        seen.append(task.get_name())
        async with asyncio.timeout(0.01):  # it times out this handler, no one else
            await asyncio.sleep(5)

    worker, runtime = make_worker(handler, worker_count=3, max_attempts=2)
    now = asyncio.get_running_loop().time()
    worker.buffer.extend((row(i), now) for i in range(3))
    worker._start_buffered(worker._current_size())
    results = await runtime.writer.wait_for(3)
    assert sorted(seen) == [f"pgqueue-task-{i}" for i in range(3)]
    assert [r.outcome.status for r in results] == [Status.MUST_RETRY] * 3
    assert all((r.outcome.error or "").startswith("TimeoutError") for r in results)
    assert outer is not None and not outer.cancelling()


async def test_attempts_that_end_at_once_do_not_start_each_other_recursively() -> None:
    # An attempt that ends at once asks for the next buffered claim from inside the call that
    # started it; thousands of them must not nest (RecursionError) but go on in one loop.
    ran: list[int] = []

    async def handler(envelope: Any) -> None:
        ran.append(envelope.id)

    count = 5_000  # nested, each of them would take several frames
    worker, runtime = make_worker(handler, worker_count=count)
    now = asyncio.get_running_loop().time()
    worker.buffer.extend((row(i), now) for i in range(count))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000)  # Python's default (a test runner may have raised it)
    try:
        worker._start_buffered(worker._current_size())
    finally:
        sys.setrecursionlimit(limit)
    results = await runtime.writer.wait_for(count)
    assert ran == list(range(count))
    assert all(r.outcome.status is Status.SUCCEEDED for r in results)
    assert not worker.buffer and not worker.inflight


async def test_starting_stops_where_a_claim_fits_and_goes_on_in_the_next_turn() -> None:
    ran: list[int] = []

    async def handler(envelope: Any) -> None:
        ran.append(envelope.id)

    worker, runtime = make_worker(handler, worker_count=100)
    now = asyncio.get_running_loop().time()
    worker.buffer.extend((row(i), now) for i in range(12))
    # The claim loop's call: no more than 5 tasks may stay running or buffered.
    worker._start_buffered(worker._current_size(), keep=5)
    if EAGER:  # those started ended at once: the rest wait for the next turn
        assert ran == list(range(7)) and len(worker.buffer) == 5
    else:  # started tasks run in the next turn; starting them frees nothing
        assert ran == [] and not worker.buffer
    await runtime.writer.wait_for(12)
    assert ran == list(range(12))
    assert not worker.buffer and not worker.inflight
