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
    """Rows by id, the finished_results table, and the channel of ended tasks."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[Any, ...]] = {}
        self.kept: dict[int, tuple[str, str, str | None]] = {}  # finished_results
        self.channel: asyncio.Queue[str] = asyncio.Queue()
        self.listens = 0

    async def run(self, op: Operation[Any]) -> Any:
        async def fetch(statement: Statement) -> list[tuple[Any, ...]]:
            if statement.sql == QUERIES["mark_task_waited"]:
                found = self.rows.get(statement.params["id"])
                return [found] if found else []
            if statement.sql == QUERIES["get_tasks"]:
                return [self.rows[i] for i in statement.params["ids"] if i in self.rows]
            if statement.sql == QUERIES["get_finished_results"]:
                return [(i, *self.kept[i]) for i in statement.params["ids"] if i in self.kept]
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


def test_deleted_tasks_come_from_finished_results() -> None:
    async def scenario() -> None:
        server = FakeServer()
        server.rows[4] = row(4, "new")
        waiters = TaskWaiters(server, QUERIES)  # type: ignore[arg-type]
        waiting = asyncio.ensure_future(waiters.wait(4, 2))
        for _ in range(1000):
            if 4 in waiters.watches and waiters.watches[4].seen is not None:
                break
            await asyncio.sleep(0)
        del server.rows[4]  # deleted as it ended; the statement kept its outcome
        server.kept[4] = ("k", "succeeded", '{"n": 1}')
        server.channel.put_nowait("F:3-4S,9C:k:x")
        info = await waiting
        assert (info.status, info.result, info.payload) == (Status.SUCCEEDED, {"n": 1}, {"p": 1})
        # A wait that begins after such a task was deleted gets what was kept of it, if any.
        server.kept[8] = ("mail", "cancelled", None)
        late = await waiters.wait(8, 2)
        assert (late.id, late.kind, late.status, late.result) == (8, "mail", Status.CANCELLED, None)
        with pytest.raises(UnknownTask, match="no task with id 9"):
            await waiters.wait(9, 2)
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


def test_a_burst_of_announcements_is_read_in_a_few_statements_one_at_a_time() -> None:
    """Announcements that arrive while a read is in flight wait for it and are read together
    next, so 200 ends announced one by one cost 2 reads of the tasks, never 2 at once."""

    async def scenario() -> None:
        server = FakeServer()
        ids = list(range(1, 201))
        for task_id in ids:
            server.rows[task_id] = row(task_id, "new")
        reads: list[int] = []
        in_flight = 0
        most_in_flight = 0
        release = asyncio.Event()
        run = server.run

        waiters = TaskWaiters(server, QUERIES)  # type: ignore[arg-type]
        waits = [asyncio.ensure_future(waiters.wait(task_id, 5)) for task_id in ids]
        for _ in range(10_000):  # loop turns until every wait read its row and waits
            if len(waiters.watches) == len(ids) and all(
                w.seen is not None for w in waiters.watches.values()
            ):
                break
            await asyncio.sleep(0)

        async def fetch_gate(op: Operation[Any]) -> Any:
            nonlocal in_flight, most_in_flight
            in_flight += 1
            most_in_flight = max(most_in_flight, in_flight)
            try:
                await release.wait()
                result = await run(op)
                reads.append(len(result))
                return result
            finally:
                in_flight -= 1

        server.run = fetch_gate  # type: ignore[method-assign]
        for task_id in ids:
            server.rows[task_id] = row(task_id, "succeeded", str(task_id))
        waiters.dispatch(f"f:{ids[0]}s")  # the first read starts and waits on the gate
        await asyncio.sleep(0)
        for task_id in ids[1:]:  # announced one by one while it is in flight
            waiters.dispatch(f"f:{task_id}s")
        release.set()
        infos = await asyncio.gather(*waits)
        assert [info.result for info in infos] == ids
        assert reads == [1, 199] and most_in_flight == 1
        await waiters.close()

    asyncio.run(scenario())
