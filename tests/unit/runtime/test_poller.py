"""DuePoller without a database: one statement per poll for every kind, wakes, next due time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

from pgqueue.runtime.poller import DuePoller
from pgqueue.store.executor import Operation, Row, drive_async
from pgqueue.store.queries import Queries

NOW = datetime.now(UTC)


class ScriptedExecutor:
    """Answers each poll with the next scripted row (the last one repeats) and records it."""

    def __init__(self, answers: list[Row]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []
        self.called = asyncio.Event()

    async def open(self) -> None:
        pass

    async def run(self, op: Operation[Any]) -> Any:
        async def fetch(statement: Any) -> list[Row]:
            self.calls.append(dict(statement.params))
            self.called.set()
            return [self.answers[min(len(self.calls), len(self.answers)) - 1]]

        return await drive_async(op, fetch)

    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    async def wait_calls(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.calls) < count:
                self.called.clear()
                await self.called.wait()


async def test_one_statement_per_poll_for_all_kinds_wakes_due_kinds() -> None:
    kinds = [f"k{i}" for i in range(500)]
    executor = ScriptedExecutor([(time.time(), ["k3", "k7"], None, None, [None] * 500, NOW)])
    woken: list[str] = []
    poller = DuePoller(executor, Queries(), kinds, woken.append, period=60.0)
    task = asyncio.create_task(poller.run())
    await executor.wait_calls(1)
    await asyncio.sleep(0)  # let the poll's answer be handled
    task.cancel()
    assert len(executor.calls) == 1
    assert executor.calls[0] == {"kinds": kinds, "floors": [None] * 500}
    assert woken == ["k3", "k7"]


async def test_polls_again_when_the_next_task_falls_due_not_after_the_period() -> None:
    executor = ScriptedExecutor(
        [(time.time(), [], 0.05, "k", [None], NOW), (time.time(), ["k"], None, None, [None], NOW)]
    )
    woken: list[str] = []
    poller = DuePoller(executor, Queries(), ["k"], woken.append, period=3600.0)
    task = asyncio.create_task(poller.run())
    await executor.wait_calls(2)  # with an hour's period, only the due time explains a 2nd poll
    await asyncio.sleep(0)
    task.cancel()
    # At its due time, and again by the poll that saw it due: the first wake's claim may have
    # read the table a moment before the task fell due.
    assert woken == ["k", "k"]


async def test_a_notified_due_time_brings_the_next_poll_forward() -> None:
    executor = ScriptedExecutor([(time.time(), [], None, None, [None], NOW)])
    poller = DuePoller(executor, Queries(), ["k"], lambda kind: None, period=3600.0)
    task = asyncio.create_task(poller.run())
    await executor.wait_calls(1)
    poller.due_at_epoch(time.time() + 0.05)
    await executor.wait_calls(2)
    task.cancel()


async def test_a_failed_poll_is_retried_within_seconds_not_a_period_later() -> None:
    class Failing(ScriptedExecutor):
        async def run(self, op: Operation[Any]) -> Any:
            self.calls.append({})
            self.called.set()
            raise OSError("connection lost")

    executor = Failing([])
    poller = DuePoller(executor, Queries(), ["k"], lambda kind: None, period=3600.0)
    task = asyncio.create_task(poller.run())
    await executor.wait_calls(1)
    # Tried again within 5 s, not an hour later.
    assert poller.next_poll <= asyncio.get_running_loop().time() + 5
    task.cancel()


async def test_close_ends_the_poller_even_if_the_driver_swallows_the_cancellation() -> None:
    class Swallowing(ScriptedExecutor):
        async def run(self, op: Operation[Any]) -> Any:
            self.calls.append({})
            self.called.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise OSError("query cancelled") from None  # as a driver may report it

    executor = Swallowing([])
    poller = DuePoller(executor, Queries(), ["k"], lambda kind: None, period=3600.0)
    task = asyncio.create_task(poller.run())
    await executor.wait_calls(1)
    poller.close()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=10)
    assert done == {task}
