"""Test helpers that wait on what the runtime reports, never on sleeps."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from pgqueue.events import (
    AttemptFinished,
    Event,
    ResultsWritten,
    TasksClaimed,
    TerminalTasksSwept,
)
from pgqueue.store.executor import AsyncExecutor, Operation, Steps
from pgqueue.store.queries import Queries

T = TypeVar("T")


class Recorder:
    """Subscribes to a queue's events and lets tests wait for conditions on them."""

    def __init__(self, queue: Any) -> None:
        self.cond = threading.Condition()
        self.written: dict[int, list[str]] = defaultdict(list)  # applied results per task
        self.finished: list[AttemptFinished] = []
        self.claimed: list[int] = []
        self.claim_batches: list[int] = []  # rows per claim, in order
        self.swept: dict[str, int] = defaultdict(int)  # kind -> rows deleted by retention
        self.first_sweep_at: dict[str, float] = {}  # kind -> when retention first deleted
        self.written_at: dict[int, float] = {}  # task id -> when its last result applied
        queue.subscribe(self)

    def __call__(self, event: Event) -> None:
        with self.cond:
            if isinstance(event, ResultsWritten):
                for task_id, _kind, status, applied in event.results:
                    if applied:
                        self.written[task_id].append(status)
                        self.written_at[task_id] = time.monotonic()
            elif isinstance(event, AttemptFinished):
                self.finished.append(event)
            elif isinstance(event, TasksClaimed):
                self.claimed.extend(event.task_ids)
                self.claim_batches.append(len(event.task_ids))
            elif isinstance(event, TerminalTasksSwept):
                self.swept[event.kind] += event.deleted
                if event.deleted:
                    self.first_sweep_at.setdefault(event.kind, time.monotonic())
            self.cond.notify_all()

    def status_of(self, task_id: int) -> str | None:
        statuses = self.written.get(task_id)
        return statuses[-1] if statuses else None

    def wait(self, predicate: Callable[[Recorder], bool], timeout: float = 30.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self), timeout), "timed out waiting"

    def wait_status(self, task_id: int, status: str, timeout: float = 30.0) -> None:
        self.wait(lambda r: r.status_of(task_id) == status, timeout)

    def wait_count(self, count: int, timeout: float = 60.0) -> None:
        self.wait(lambda r: sum(len(v) for v in r.written.values()) >= count, timeout)

    async def await_(self, predicate: Callable[[Recorder], bool], timeout: float = 30.0) -> None:
        await asyncio.to_thread(self.wait, predicate, timeout)

    async def await_status(self, task_id: int, status: str, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self.wait_status, task_id, status, timeout)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, step: float = 0.02) -> None:
    """Wait for a condition that no event reports (a counter of the runtime, a row in the
    database), checking it every ``step`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(step)


class CountingExecutor:
    """Wraps an async executor and records the name and parameters of every statement it
    sends (``statements``, in order) and which of them finished (``finished``, their indexes
    in ``statements``)."""

    def __init__(self, inner: AsyncExecutor, queries: Queries) -> None:
        self.inner = inner
        self.names = {queries[name]: name for name in queries.names()}
        self.statements: list[tuple[str, dict[str, Any]]] = []
        self.finished: set[int] = set()
        self.changed = asyncio.Event()

    async def open(self) -> None:
        await self.inner.open()

    async def run(self, op: Operation[T]) -> T:
        sent: list[int] = []

        def steps() -> Steps[T]:
            inner = op.steps
            rows: Any = None
            try:
                statement = next(inner)
                while True:
                    sent.append(len(self.statements))
                    self.statements.append(
                        (self.names.get(statement.sql, "?"), dict(statement.params))
                    )
                    self.changed.set()
                    rows = yield statement
                    statement = inner.send(rows)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

        try:
            return await self.inner.run(Operation(steps(), op.transactional))
        finally:
            self.finished.update(sent)
            self.changed.set()

    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        return self.inner.listen(channel)

    async def close(self) -> None:
        await self.inner.close()

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.statements if n == name)

    def finished_since(self, name: str, start: int) -> int:
        """How many ``name`` statements sent at index ``start`` or later have finished."""
        return sum(1 for i in self.finished if i >= start and self.statements[i][0] == name)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
