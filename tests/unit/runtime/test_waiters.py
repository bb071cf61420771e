"""The waiter registry without a database: a fake executor answers its statements and plays
the announcements a real server would send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from pgqueue import Status, UnknownTask, WaitTimeout
from pgqueue.runtime.waiters import TaskWaiters
from pgqueue.store.executor import Operation, Statement, drive_async
from pgqueue.store.queries import Queries

QUERIES = Queries("s")


def row(task_id: int, status: str, result: str | None = None) -> tuple[Any, ...]:
    return (task_id, "k", '{"p": 1}', None, status, False, 1, 0, 1, [], None, None, None, None,
            None, result, 0)  # fmt: skip


class FakeServer:
    """Rows by id, kept results, and a channel: an echo comes back after what was sent first."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[Any, ...]] = {}
        self.kept: dict[int, str] = {}
        self.channel: asyncio.Queue[str] = asyncio.Queue()
        self.before_echo: list[str] = []  # announcements "committed" just before an echo
        self.listens = 0

    async def run(self, op: Operation[Any]) -> Any:
        async def fetch(statement: Statement) -> list[tuple[Any, ...]]:
            if statement.sql == QUERIES["get_task"]:
                found = self.rows.get(statement.params["id"])
                return [found] if found else []
            if statement.sql == QUERIES["get_tasks"]:
                return [self.rows[i] for i in statement.params["ids"] if i in self.rows]
            if statement.sql == QUERIES["get_finished_results"]:
                return [(i, self.kept[i]) for i in statement.params["ids"] if i in self.kept]
            if statement.sql == QUERIES["listener_ping"]:
                for payload in self.before_echo:
                    self.channel.put_nowait(payload)
                self.channel.put_nowait(statement.params["payload"])
                return []
            raise AssertionError(statement.sql)

        return await drive_async(op, fetch)

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        assert channel == "pgqueue_s_finished"
        self.listens += 1

        async def payloads() -> AsyncIterator[str]:
            while True:
                yield await self.channel.get()

        yield payloads()


def test_an_announcement_hands_the_read_row_to_every_waiter_of_it() -> None:
    async def scenario() -> None:
        server = FakeServer()
        server.rows[7] = row(7, "new")
        waiters = TaskWaiters(server, QUERIES)  # type: ignore[arg-type]
        first = asyncio.ensure_future(waiters.wait(7, None))
        second = asyncio.ensure_future(waiters.wait(7, 2))
        for _ in range(1000):  # loop turns until both waits read the row and wait
            watch = waiters.watches.get(7)
            if watch is not None and len(watch.futures) == 2 and watch.seen is not None:
                break
            await asyncio.sleep(0)
        server.rows[7] = row(7, "succeeded", '{"rows": 3}')
        server.channel.put_nowait("f:5-7s,9c")
        one, two = await asyncio.gather(first, second)
        assert one.result == two.result == {"rows": 3} and one.status is Status.SUCCEEDED
        assert server.listens == 1 and not waiters.watches
        await waiters.close()

    asyncio.run(scenario())


def test_a_task_deleted_before_its_first_read_reports_what_its_announcement_said() -> None:
    async def scenario() -> None:
        server = FakeServer()
        server.kept[8] = '{"n": 2}'
        # The row is gone when the waiter reads it; its announcement was committed before.
        server.before_echo.append("F:6-8S,12C:mail:x")
        waiters = TaskWaiters(server, QUERIES)  # type: ignore[arg-type]
        info = await waiters.wait(8, 5)
        assert (info.id, info.kind, info.status) == (8, "mail:x", Status.SUCCEEDED)
        assert info.result == {"n": 2}
        with pytest.raises(UnknownTask, match="no task with id 9"):
            await waiters.wait(9, 5)  # no announcement came before the echo: unknown
        await waiters.close()

    asyncio.run(scenario())


def test_a_wait_times_out_and_leaves_no_watch() -> None:
    async def scenario() -> None:
        server = FakeServer()
        server.rows[3] = row(3, "must_retry")
        waiters = TaskWaiters(server, QUERIES)  # type: ignore[arg-type]
        with pytest.raises(WaitTimeout, match=r"task 3 did not end within 0\.05s"):
            await waiters.wait(3, 0.05)
        assert not waiters.watches
        await waiters.close()

    asyncio.run(scenario())
