"""Waiting for tasks to end (``queue.wait``): one LISTEN connection per queue, however many
waiters, on the channel where the result statements announce ended tasks.

A waiter registers its task id, makes sure the listener is up, then reads the task: ended
already, it returns; otherwise it waits for an announcement naming its id, after which the
registry reads the ended tasks in one statement and hands each waiter its :class:`TaskInfo`.
Tasks deleted as they end (a retention of 0) are announced with their outcome (and their
non-null results are kept a few minutes in ``finished_results``), so their waiters still get
them. A recheck every few seconds covers what no announcement tells: a listener that
reconnected, a worker that died on a task's last attempt.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import uuid
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
ECHO_TIMEOUT = 5.0  # seconds an echo through the listener may take
MAX_READ_BATCH = 5000  # ids per read of watched tasks
REMEMBER_DELETED = 300.0  # seconds runs of deleted tasks are remembered (finished_results keeps
MAX_REMEMBERED = 100_000  # their results five minutes), and at most this many runs
_LETTERS = {"s": Status.SUCCEEDED, "c": Status.CANCELLED, "n": Status.NO_ATTEMPTS_LEFT}


def has_ended(info: TaskInfo) -> bool:
    """True once nothing will run the task again (unless someone retries it)."""
    return info.status in (Status.SUCCEEDED, Status.CANCELLED, Status.NO_ATTEMPTS_LEFT)


@dataclass(slots=True)
class _Watch:
    """The waiters of one task, what the registry knows of it, and how it ended if it was
    deleted as it ended."""

    futures: list[asyncio.Future[TaskInfo]] = field(default_factory=list)
    seen: TaskInfo | None = None  # the row as read when a wait began
    deleted: tuple[Status, str] | None = None  # (outcome, kind) of a task deleted as it ended


class TaskWaiters:
    """The waiters of one queue; :meth:`wait` is ``queue.wait``."""

    def __init__(self, executor: AsyncExecutor, queries: Queries) -> None:
        self.executor = executor
        self.queries = queries
        self.watches: dict[int, _Watch] = {}
        self.listening = asyncio.Event()
        self.listener_connections = 0  # LISTEN connections opened so far (one at a time)
        self._listener: asyncio.Task[None] | None = None
        self._echoes: dict[str, asyncio.Future[None]] = {}
        self._reads: set[asyncio.Task[None]] = set()
        self._closed = False
        # Runs of tasks heard deleted as they ended: (heard at, first id, last id, status, kind).
        self._recent_deleted: collections.deque[tuple[float, int, int, Status, str]] = (
            collections.deque()
        )

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
        # Read only once the listener is up: an end committed after this read is heard.
        info = await self.executor.run(operations.get_task(self.queries, task_id))
        if future.done():
            return future.result()
        if info is None:
            if watch.deleted is None:
                # Deleted as it ended just now? Its announcement was committed before our read:
                # once an echo sent now comes back, the listener has heard it.
                await self._echo()
            if future.done():
                return future.result()
            if watch.deleted is None:
                watch.deleted = self._deleted_outcome(task_id)
            if watch.deleted is None:
                raise UnknownTask(f"no task with id {task_id}")
            await self._resolve_deleted({task_id: watch.deleted})
            return await future
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
        """Act on one announcement: ``f:<runs>`` (rows kept) or ``F:<RUNS>:<kind>`` (rows
        deleted as they ended), where a run ``<first>[-<last>]<letter>`` names consecutive ids
        that ended alike; or an echo."""
        prefix, _, value = payload.partition(":")
        if prefix == "e":
            echo = self._echoes.pop(value, None)
            if echo is not None and not echo.done():
                echo.set_result(None)
            return
        if prefix not in ("f", "F") or (prefix == "f" and not self.watches):
            return
        entries, kind = (value, "") if prefix == "f" else value.partition(":")[::2]
        now = asyncio.get_running_loop().time()
        kept: list[int] = []
        deleted: dict[int, tuple[Status, str]] = {}
        watches = self.watches
        for run in entries.split(","):
            status = _LETTERS.get(run[-1:].lower())
            first, _, last = run[:-1].partition("-")
            try:
                low = int(first)
                high = int(last) if last else low
            except ValueError:
                continue
            if status is None:
                continue
            if prefix == "F":
                self._remember(low, high, status, kind, now)
            if high - low < len(watches):
                named: Iterable[int] = (i for i in range(low, high + 1) if i in watches)
            else:
                named = [i for i in watches if low <= i <= high]
            for task_id in named:
                if prefix == "F":
                    watches[task_id].deleted = deleted[task_id] = (status, kind)
                else:
                    kept.append(task_id)
        if kept:
            self._spawn(self._recheck(kept))
        if deleted:
            self._spawn(self._resolve_deleted(deleted))

    def _remember(self, low: int, high: int, status: Status, kind: str, now: float) -> None:
        """Keep a run of deleted tasks a while: a wait that starts after one ended and was
        deleted still learns its outcome (its result, if any, is in finished_results)."""
        recent = self._recent_deleted
        recent.append((now, low, high, status, kind))
        while recent and (recent[0][0] < now - REMEMBER_DELETED or len(recent) > MAX_REMEMBERED):
            recent.popleft()

    def _deleted_outcome(self, task_id: int) -> tuple[Status, str] | None:
        for _, low, high, status, kind in reversed(self._recent_deleted):
            if low <= task_id <= high:
                return status, kind
        return None

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

    async def _resolve_deleted(self, deleted: dict[int, tuple[Status, str]]) -> None:
        """Hand tasks deleted as they ended to their waiters, with their kept results."""
        succeeded = [i for i, (status, _) in deleted.items() if status is Status.SUCCEEDED]
        results = (
            await self.executor.run(operations.get_finished_results(self.queries, succeeded))
            if succeeded
            else {}
        )
        for task_id, (status, kind) in deleted.items():
            watch = self.watches.get(task_id)
            if watch is None:
                continue
            seen = watch.seen
            if seen is None:  # deleted before its first read: what the announcement told
                seen = TaskInfo(task_id, kind, None, None, status, status, 0, 0, 0)
            self._hand_out(
                task_id,
                dataclasses.replace(
                    seen, status=status, stored_status=status, result=results.get(task_id)
                ),
            )

    def _hand_out(self, task_id: int, info: TaskInfo) -> None:
        watch = self.watches.get(task_id)
        if watch is not None:
            for future in watch.futures:
                if not future.done():
                    future.set_result(info)

    async def _echo(self) -> None:
        """Send an echo through the listener and wait until it comes back."""
        token = uuid.uuid4().hex
        echo: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._echoes[token] = echo
        try:
            await self.executor.run(operations.announce_finished_echo(self.queries, f"e:{token}"))
            async with asyncio.timeout(ECHO_TIMEOUT):
                await echo
        except TimeoutError:
            log.warning("the wait listener did not hear its echo within %.0fs", ECHO_TIMEOUT)
        finally:
            self._echoes.pop(token, None)

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
