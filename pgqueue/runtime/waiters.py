"""Waiting for tasks to end (``queue.wait``): one LISTEN connection per queue, however many
waiters, on the channel where the result statements announce waited tasks that ended.

A wait makes sure the listener is up, then marks its task as waited and reads it in one
statement (``mark_task_waited``): an end recorded before the mark is in the row it reads; one
recorded after it sees the mark, and so announces the task (and, for a task deleted as it ends,
keeps its outcome and result a few minutes in ``finished_results``). The registry reads the
announced tasks in one statement and hands each waiter its :class:`TaskInfo`. Tasks nobody
waits on cost the result statements nothing. A recheck every few seconds covers what no
announcement tells: a listener that reconnected, a worker that died on a task's last attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pgqueue.aio import cancel_and_wait
from pgqueue.delayer import Backoff
from pgqueue.errors import UnknownTask, WaitTimeout
from pgqueue.store import operations
from pgqueue.store.executor import AsyncExecutor
from pgqueue.store.queries import Queries
from pgqueue.task import Status, TaskInfo

log = logging.getLogger("pgqueue.wait")

RECHECK_PERIOD = 5.0  # seconds between reads of every watched task (what no NOTIFY tells)
MAX_READ_BATCH = 5000  # ids per read of watched tasks
_LETTERS = {"s": Status.SUCCEEDED, "c": Status.CANCELLED, "n": Status.NO_ATTEMPTS_LEFT}


def has_ended(info: TaskInfo) -> bool:
    """True once nothing will run the task again (unless someone retries it)."""
    return info.status in (Status.SUCCEEDED, Status.CANCELLED, Status.NO_ATTEMPTS_LEFT)


@dataclass(slots=True)
class _Watch:
    """The waiters of one task and the row as the first of them read it."""

    futures: list[asyncio.Future[TaskInfo]] = field(default_factory=list)
    seen: TaskInfo | None = None  # the row as read when a wait began


class TaskWaiters:
    """The waiters of one queue; :meth:`wait` is ``queue.wait``."""

    def __init__(self, executor: AsyncExecutor, queries: Queries) -> None:
        self.executor = executor
        self.queries = queries
        self.watches: dict[int, _Watch] = {}
        self.listening = asyncio.Event()
        self.listener_connections = 0  # LISTEN connections opened so far (one at a time)
        self._listener: asyncio.Task[None] | None = None
        self._reads: set[asyncio.Task[None]] = set()
        self._announced: dict[int, bool] = {}  # announced, not read yet: id -> deleted as it ended
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    async def wait(self, task_id: int, timeout: float | None) -> TaskInfo:  # noqa: ASYNC109 - the API
        """The task once it ended; :class:`UnknownTask` at once when there is no such task,
        :class:`WaitTimeout` when it did not end within ``timeout`` seconds."""
        operations.check_task_id(task_id, "task id")
        if timeout is not None and (
            not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0
        ):
            raise ValueError(f"timeout must be None or seconds >= 0, got {timeout!r}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TaskInfo] = loop.create_future()
        watch = self.watches.get(task_id)
        if watch is None:
            watch = self.watches[task_id] = _Watch()
        watch.futures.append(future)
        try:
            async with asyncio.timeout(timeout) as deadline:
                return await self._wait(task_id, watch, future)
        except TimeoutError:
            if deadline.expired():
                raise WaitTimeout(f"task {task_id} did not end within {timeout:g}s") from None
            raise
        finally:
            watch.futures.remove(future)
            if not watch.futures and self.watches.get(task_id) is watch:
                del self.watches[task_id]

    async def _wait(
        self, task_id: int, watch: _Watch, future: asyncio.Future[TaskInfo]
    ) -> TaskInfo:
        self._ensure_listener()
        await self.listening.wait()
        info = await self.executor.run(operations.mark_task_waited(self.queries, task_id))
        if future.done():
            return future.result()
        if info is None:
            # Deleted as it ended? Kept in finished_results if an earlier wait had marked it.
            await self._resolve_deleted([task_id])
            if future.done():
                return future.result()
            raise UnknownTask(f"no task with id {task_id}")
        if has_ended(info):
            return info
        if watch.seen is None:
            watch.seen = info
        return await future

    def _ensure_listener(self) -> None:
        if self._closed:
            raise RuntimeError("the queue's waiters are closed")
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="pgqueue-wait-listener")

    async def _listen(self) -> None:
        """Hold the LISTEN connection while anyone waits; reconnect with backoff."""
        backoff = Backoff(5.0)
        while not self._closed:
            try:
                async with self.executor.listen(self.queries.finished_channel) as payloads:
                    self.listener_connections += 1
                    backoff.reset()
                    self.listening.set()
                    self._spawn(self._recheck(list(self.watches)))  # missed while away
                    await self._consume(payloads)
                raise ConnectionError("the LISTEN connection closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged and retried: waiters wait on
                self.listening.clear()
                delay = backoff.next()
                log.warning("wait listener lost, reconnecting in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)

    async def _consume(self, payloads: Any) -> None:
        iterator = payloads.__aiter__()
        while True:
            try:
                async with asyncio.timeout(RECHECK_PERIOD):
                    payload = await iterator.__anext__()
            except TimeoutError:
                if self.watches:
                    self._spawn(self._recheck(list(self.watches)))
                continue
            except StopAsyncIteration:
                return
            self.dispatch(payload)

    def dispatch(self, payload: str) -> None:
        """Act on one announcement: ``f:<ids>`` (rows kept) or ``F:<IDS>:<kind>`` (rows deleted
        as they ended), each ``<id><status letter>``; a run ``<first>-<last><letter>`` of
        consecutive ids is read too."""
        prefix, _, value = payload.partition(":")
        if prefix not in ("f", "F") or not self.watches:
            return
        entries = value.partition(":")[0]  # 'F:' messages end with ':<kind>'
        announced = self._announced
        watches = self.watches
        for run in entries.split(","):
            if run[-1:].lower() not in _LETTERS:
                continue
            first, _, last = run[:-1].partition("-")
            try:
                low = int(first)
                high = int(last) if last else low
            except ValueError:
                continue
            if high - low < len(watches):
                named: Iterable[int] = (i for i in range(low, high + 1) if i in watches)
            else:
                named = [i for i in watches if low <= i <= high]
            for task_id in named:
                announced[task_id] = prefix == "F"
        if announced and (self._reader is None or self._reader.done()):
            self._reader = asyncio.create_task(self._read_announced(), name="pgqueue-wait-reader")
            self._reads.add(self._reader)
            self._reader.add_done_callback(self._read_done)

    async def _read_announced(self) -> None:
        """Read the announced tasks, and then those announced meanwhile, until none is left.

        One read at a time, of everything announced since the last one began: a burst of ends
        costs a few statements, not one per announcement racing for the pool's connections."""
        while self._announced:
            announced, self._announced = self._announced, {}
            kept = [task_id for task_id, deleted in announced.items() if not deleted]
            deleted = [task_id for task_id, deleted in announced.items() if deleted]
            reads = []
            if kept:
                reads.append(self._recheck(kept))
            if deleted:
                reads.append(self._resolve_deleted(deleted))
            results = await asyncio.gather(*reads, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    log.warning("reading ended tasks for their waiters failed: %s", result)

    def _spawn(self, coro: Any) -> None:
        read: asyncio.Task[None] = asyncio.create_task(coro)
        self._reads.add(read)
        read.add_done_callback(self._read_done)

    def _read_done(self, read: asyncio.Task[None]) -> None:
        self._reads.discard(read)
        if not read.cancelled() and read.exception() is not None:
            log.warning("reading ended tasks for their waiters failed: %s", read.exception())

    async def _recheck(self, task_ids: Iterable[int]) -> None:
        """Read watched tasks; hand the ended ones to their waiters."""
        ids = [task_id for task_id in task_ids if task_id in self.watches]
        for start in range(0, len(ids), MAX_READ_BATCH):
            batch = ids[start : start + MAX_READ_BATCH]
            infos = await self.executor.run(operations.get_tasks(self.queries, batch))
            for info in infos:
                if has_ended(info):
                    self._hand_out(info.id, info)
            found = {info.id for info in infos}
            missing = [task_id for task_id in batch if task_id not in found]
            if missing:  # deleted as they ended, unheard (say, while the listener reconnected)
                await self._resolve_deleted(missing)

    async def _resolve_deleted(self, deleted: list[int]) -> None:
        """Hand waited tasks deleted as they ended to their waiters, from finished_results."""
        kept = await self.executor.run(operations.get_finished_results(self.queries, deleted))
        for task_id, (kind, status, result) in kept.items():
            watch = self.watches.get(task_id)
            if watch is None:
                continue
            seen = watch.seen
            if seen is None:  # deleted before this wait read it: what finished_results keeps
                seen = TaskInfo(task_id, kind, None, None, status, status, 0, 0, 0)
            self._hand_out(
                task_id,
                dataclasses.replace(seen, status=status, stored_status=status, result=result),
            )

    def _hand_out(self, task_id: int, info: TaskInfo) -> None:
        watch = self.watches.get(task_id)
        if watch is not None:
            for future in watch.futures:
                if not future.done():
                    future.set_result(info)

    async def close(self) -> None:
        """Stop listening; waiting calls still running get ``CancelledError``."""
        self._closed = True
        tasks = [*self._reads]
        if self._listener is not None:
            tasks.append(self._listener)
        await cancel_and_wait(tasks)
        for watch in self.watches.values():
            for future in watch.futures:
                future.cancel()
