"""Helpers for your own tests: assert what was pushed, and run due tasks inline.

``assert_pushed`` / ``assert_not_pushed`` look at the queue's table; ``drain`` claims the due
tasks and runs them in the calling thread with the same attempt machinery the workers use (hooks,
stamps, decisions, recorded results), so a test needs no background worker and no waiting::

    from pgqueue.testing import assert_pushed, drain

    def test_signup_sends_welcome(queue):
        signup(queue, "ada@example.org")
        assert_pushed(queue, "send-email", payload={"to": "ada@example.org"})
        [outcome] = drain(queue, "send-email")
        assert outcome.status == "succeeded"

With an :class:`~pgqueue.AsyncQueue` the same functions return awaitables
(``await drain(queue)``). The pytest plugin (:mod:`pgqueue.pytest_plugin`, loaded when pgqueue
is installed) gives a migrated schema per test: the ``pgqueue_schema`` fixture.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from json import loads as json_loads
from typing import Any, TypeVar, overload

from pgqueue.async_queue import AsyncQueue
from pgqueue.base import QueueBase, QueueState
from pgqueue.envelope import Envelope
from pgqueue.options import terminal_ttl_of
from pgqueue.queue import Queue
from pgqueue.registry import KindSpec
from pgqueue.runtime.completer import Result, record_results
from pgqueue.runtime.execution import AttemptRunner, DeadlineGuard, Outcome
from pgqueue.runtime.threads import Job, SyncThreadPool
from pgqueue.store import operations
from pgqueue.store.executor import Operation, Row
from pgqueue.store.operations import ANY_PAYLOAD, find_pushed_tasks
from pgqueue.task import Status

__all__ = [
    "ANY_PAYLOAD",
    "DrainedTask",
    "PushedTask",
    "assert_not_pushed",
    "assert_pushed",
    "drain",
]

T = TypeVar("T")
DEFAULT_DRAIN_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class PushedTask:
    """A task found by :func:`assert_pushed`."""

    id: int
    kind: str
    payload: Any
    external_key: str | None
    status: str


@dataclass(frozen=True, slots=True)
class DrainedTask:
    """One attempt run by :func:`drain`, and the transition it recorded."""

    id: int
    kind: str
    payload: Any
    external_key: str | None
    attempt: int
    status: Status
    error: str | None = None
    delay: float = 0.0
    result: Any = None  # what the handler returned (as stored: decoded from its JSON)


# --- assertions -------------------------------------------------------------------------------


def _describe(kind: str, payload: Any, key: str | None) -> str:
    parts = [f"kind={kind!r}"]
    if key is not None:
        parts.append(f"external_key={key!r}")
    if payload is not ANY_PAYLOAD:
        parts.append(f"payload containing {payload!r}")
    return ", ".join(parts)


def _found(kind: str, rows: list[tuple[int, Any, str | None, str]]) -> list[PushedTask]:
    return [PushedTask(id_, kind, payload, key, status) for id_, payload, key, status in rows]


def _check_pushed(
    kind: str, payload: Any, key: str | None, found: list[PushedTask], expect: bool
) -> list[PushedTask]:
    if expect and not found:
        raise AssertionError(f"no task pushed with {_describe(kind, payload, key)}")
    if not expect and found:
        raise AssertionError(
            f"{len(found)} task(s) pushed with {_describe(kind, payload, key)}: {found[:5]!r}"
        )
    return found


@overload
def assert_pushed(
    queue: AsyncQueue, kind: str, *, payload: Any = ..., key: str | None = ...
) -> Awaitable[list[PushedTask]]: ...


@overload
def assert_pushed(
    queue: Queue, kind: str, *, payload: Any = ..., key: str | None = ...
) -> list[PushedTask]: ...


def assert_pushed(
    queue: Queue | AsyncQueue, kind: str, *, payload: Any = ANY_PAYLOAD, key: str | None = None
) -> list[PushedTask] | Awaitable[list[PushedTask]]:
    """Assert that a task of ``kind`` was pushed (in any status since), with ``key`` when given
    and a payload containing ``payload`` when given (JSON containment: ``{"a": 1}`` matches a
    payload ``{"a": 1, "b": 2}``; ``None`` matches a task without payload). Returns the tasks
    found, oldest first; an ``AsyncQueue`` returns an awaitable."""
    found: list[PushedTask] | Awaitable[list[PushedTask]]
    found = _assert(queue, kind, payload, key, expect=True)
    return found


@overload
def assert_not_pushed(
    queue: AsyncQueue, kind: str, *, payload: Any = ..., key: str | None = ...
) -> Awaitable[None]: ...


@overload
def assert_not_pushed(
    queue: Queue, kind: str, *, payload: Any = ..., key: str | None = ...
) -> None: ...


def assert_not_pushed(
    queue: Queue | AsyncQueue, kind: str, *, payload: Any = ANY_PAYLOAD, key: str | None = None
) -> Awaitable[None] | None:
    """Assert that no task matching ``kind``, ``key`` and ``payload`` (as in
    :func:`assert_pushed`) exists; an ``AsyncQueue`` returns an awaitable."""
    result = _assert(queue, kind, payload, key, expect=False)
    if isinstance(queue, AsyncQueue):

        async def discard() -> None:
            await result

        return discard()
    return None


def _assert(
    queue: Queue | AsyncQueue, kind: str, payload: Any, key: str | None, *, expect: bool
) -> Any:
    op = find_pushed_tasks(queue.queries, kind, payload, key)
    if isinstance(queue, AsyncQueue):

        async def run() -> list[PushedTask]:
            rows = await queue.executor.run(op)
            return _check_pushed(kind, payload, key, _found(kind, rows), expect)

        return run()
    if isinstance(queue, Queue):
        return _check_pushed(kind, payload, key, _found(kind, queue.executor.run(op)), expect)
    raise TypeError(f"expected a Queue or an AsyncQueue, got {type(queue).__name__}")


# --- drain ------------------------------------------------------------------------------------


class _InlineThreads(SyncThreadPool):
    """Runs sync handlers and hooks at once, in the thread running the drain."""

    def __init__(self) -> None:
        super().__init__(1, name="pgqueue-drain")

    def submit_job(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any
    ) -> tuple[asyncio.Future[T], Job]:
        future: asyncio.Future[T] = loop.create_future()
        ran: concurrent.futures.Future[T] = concurrent.futures.Future()
        ran.set_running_or_notify_cancel()
        job = Job(ran, loop.create_future())
        try:
            result = fn(*args)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - carried to the attempt, as the pool does
            future.set_exception(exc)
            ran.set_exception(exc)
        else:
            future.set_result(result)
            ran.set_result(result)
        job.returned.set_result(None)
        return future, job


class _Drainer:
    """What one drain needs per kind: its claim statement and its attempt runner."""

    def __init__(self, queue: QueueBase, kind: str | None) -> None:
        if kind is None:
            specs = queue.registry.handled()
        else:
            spec = queue.registry.get(kind)
            if spec.handler is None:
                raise ValueError(f"kind {kind!r} has no handler on this queue: nothing to run it")
            specs = [spec]
        self.queries = queue.queries
        threads = _InlineThreads()
        self.kinds = [(spec, AttemptRunner(spec, queue.stamps, threads)) for spec in specs]

    def claim(self, spec: KindSpec) -> Operation[list[Row]]:
        return operations.claim_due_tasks(self.queries, spec.kind, 1, spec.options.lease_seconds)

    async def attempt(self, spec: KindSpec, runner: AttemptRunner, row: Row) -> Result:
        """Run one claimed task's attempt (deadline enforced for async handlers)."""
        (task_id, payload, key, elapsed, left, max_attempts, token, messages, claimed_at,
         _lease_lost, snoozes, workflow, trace_context) = row  # fmt: skip
        loop = asyncio.get_running_loop()
        now = loop.time()
        envelope = Envelope.claimed(
            task_id,
            spec.kind,
            None if payload is None else json_loads(payload),
            key,
            elapsed,
            left,
            max_attempts,
            claimed_at,
            runner.timeout,
            now + runner.timeout,
            [] if messages is None else list(messages),
            snoozes,
            None if workflow is None else json_loads(workflow),
            trace_context,
        )
        guard = DeadlineGuard()
        timer = loop.call_at(envelope.monotonic_deadline, guard.fire)
        try:
            outcome = await runner.run(envelope, guard)
        finally:
            timer.cancel()
        in_workflow = workflow is not None
        delete = (
            outcome.status.is_terminal and terminal_ttl_of(spec.options) == 0 and not in_workflow
        )
        return Result(
            task_id,
            token,
            spec.kind,
            outcome,
            spec.options.max_task_error_messages,
            delete,
            envelope.attempt,
            in_workflow,
        )

    def record(self, result: Result) -> Operation[set[int]]:
        return record_results(self.queries, [result])


def _drained(result: Result, row: Row) -> DrainedTask:
    outcome: Outcome = result.outcome
    payload = None if row[1] is None else json_loads(row[1])
    return DrainedTask(
        result.task_id,
        result.kind,
        payload,
        row[2],
        row[3],
        outcome.status,
        outcome.error,
        outcome.delay,
        None if outcome.result is None else json_loads(outcome.result),
    )


@overload
def drain(
    queue: AsyncQueue, kind: str | None = ..., *, limit: int = ...
) -> Coroutine[Any, Any, list[DrainedTask]]: ...


@overload
def drain(queue: Queue, kind: str | None = ..., *, limit: int = ...) -> list[DrainedTask]: ...


def drain(
    queue: Queue | AsyncQueue, kind: str | None = None, *, limit: int = DEFAULT_DRAIN_LIMIT
) -> list[DrainedTask] | Coroutine[Any, Any, list[DrainedTask]]:
    """Run every due task of ``kind`` (every handled kind when ``None``) until none is due,
    one at a time, in the calling thread; returns one :class:`DrainedTask` per attempt run.

    A task retried without delay runs again in the same drain; one retried later is left for a
    later drain. Sync handlers run in the calling thread (their timeout cannot interrupt them
    here); async handlers are cancelled at their deadline. The queue must not be started
    (``start()`` workers would race the drain). ``limit`` bounds the attempts run, against a
    handler that keeps pushing. With an ``AsyncQueue`` it returns a coroutine to await.
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, got {limit!r}")
    if isinstance(queue, QueueBase) and queue.state is QueueState.RUNNING:
        raise RuntimeError("drain() runs tasks itself: stop() the queue's workers first")
    if isinstance(queue, AsyncQueue):
        return _drain_async(queue, _Drainer(queue, kind), limit)
    if isinstance(queue, Queue):
        return _drain_sync(queue, _Drainer(queue, kind), limit)
    raise TypeError(f"expected a Queue or an AsyncQueue, got {type(queue).__name__}")


async def _drain_async(queue: AsyncQueue, drainer: _Drainer, limit: int) -> list[DrainedTask]:
    done: list[DrainedTask] = []
    progress = True
    while progress and len(done) < limit:
        progress = False
        for spec, runner in drainer.kinds:
            claimed = await queue.executor.run(drainer.claim(spec))
            for row in claimed:
                result = await drainer.attempt(spec, runner, row)
                await queue.executor.run(drainer.record(result))
                done.append(_drained(result, row))
                progress = True
    return done


def _drain_sync(queue: Queue, drainer: _Drainer, limit: int) -> list[DrainedTask]:
    done: list[DrainedTask] = []
    with _attempt_loop() as run:
        progress = True
        while progress and len(done) < limit:
            progress = False
            for spec, runner in drainer.kinds:
                for row in queue.executor.run(drainer.claim(spec)):
                    result = run(drainer.attempt(spec, runner, row))
                    queue.executor.run(drainer.record(result))
                    done.append(_drained(result, row))
                    progress = True
    return done


@contextmanager
def _attempt_loop() -> Iterator[Callable[[Coroutine[Any, Any, T]], T]]:
    """A private event loop for the attempts of a blocking drain: in this thread, or, when this
    thread already runs a loop (an async test using a blocking queue), in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        try:
            yield loop.run_until_complete
        finally:
            loop.close()
        return
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="pgqueue-drain", daemon=True)
    thread.start()
    try:
        yield lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
