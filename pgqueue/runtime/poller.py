"""The process-wide due poller: one statement per poll period finds which kinds have due work.

Kind workers do not poll. While they are idle, :class:`DuePoller` asks the database once per
poll period, for all of the process's kinds at once, which kinds have a task due now and when
the next open task of any of them falls due (``poll_due_kinds``). It wakes the due kinds and
polls again at the next due time, or after the poll period, whichever comes first. Hints move
the next poll earlier: a push notification that names a due time (``d:<epoch>:<kind>``) and a
retry just written with a short delay. LISTEN/NOTIFY stays the fast path for tasks due at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from pgqueue.runtime.floors import ClaimFloor
from pgqueue.store.executor import AsyncExecutor, Statement, single
from pgqueue.store.queries import Queries

log = logging.getLogger("pgqueue.worker")

MIN_POLL_GAP = 0.005  # seconds between two polls at least, however many hints arrive
MAX_RETRY_DELAY = 5.0  # seconds before a failed poll is tried again, at most


class DuePoller:
    """Finds due work for all kinds of a process with one statement per poll, and wakes them.

    ``wake(kind)`` is called for every kind with a task due now. ``period`` bounds the time
    between two polls: it is the fallback that finds work no notification announced.
    """

    def __init__(
        self,
        executor: AsyncExecutor,
        queries: Queries,
        kinds: Sequence[str],
        wake: Callable[[str], None],
        period: float,
        floors: Mapping[str, ClaimFloor] | None = None,
    ) -> None:
        self.executor = executor
        self.statement = queries["poll_due_kinds"]
        self.kinds = list(kinds)
        # Where each kind's claims start reading (pgqueue/runtime/floors.py): the poll reads
        # from there too, and a poll from the index's head refreshes a floor.
        self.floors = [(floors or {}).get(kind) for kind in self.kinds]
        self.wake = wake
        self.period = period
        self.loop = asyncio.get_running_loop()
        self.next_poll = self.loop.time()  # poll at once on start
        self.changed = asyncio.Event()
        # Database epoch seconds minus local epoch seconds, learnt from every poll: turns the
        # due time a notification carries into a time on this process's clock.
        self.clock_offset = 0.0
        self.last_poll = float("-inf")
        self.closed = False
        # Kinds known to have a task falling due at a loop time: woken at once then, while
        # the poll that looks for the next due time runs.
        self.due: dict[str, float] = {}

    def close(self) -> None:
        """End :meth:`run` at its next turn, even if a driver swallowed its cancellation."""
        self.closed = True
        self.changed.set()

    def poll_at(self, when: float, kind: str | None = None) -> None:
        """Poll no later than loop time ``when`` (a task, of ``kind`` if given, falls due
        then); the kind is woken at that time directly."""
        if kind is not None and when < self.due.get(kind, float("inf")):
            self.due[kind] = when
        if when < self.next_poll:
            self.next_poll = when
            self.changed.set()

    def poll_soon(self) -> None:
        """Poll now: work may have become due unannounced (for instance while not listening)."""
        self.poll_at(self.loop.time())

    def due_at_epoch(self, epoch: float, kind: str | None = None) -> None:
        """A task falls due at ``epoch`` (database clock, seconds): wake its kind and poll
        then."""
        self.poll_at(self.loop.time() + epoch - self.clock_offset - time.time(), kind)

    async def _sleep_until_next_poll(self) -> None:
        loop = self.loop
        while not self.closed:
            wait = max(self.next_poll, self.last_poll + MIN_POLL_GAP) - loop.time()
            if wait <= 0:
                return
            self.changed.clear()
            try:
                async with asyncio.timeout(wait):
                    await self.changed.wait()
            except TimeoutError:
                return

    async def run(self) -> None:
        """Poll until closed or cancelled; a failed poll is logged and tried again a period
        later (at most 5 s)."""
        loop = self.loop
        while not self.closed:
            await self._sleep_until_next_poll()
            if self.closed:
                return
            started = self.last_poll = loop.time()
            # Hints that arrive while the statement runs lower this again.
            self.next_poll = started + self.period
            self._wake_known_due(started)
            used = [None if floor is None else floor.current() for floor in self.floors]
            statement = Statement(self.statement, {"kinds": self.kinds, "floors": used})
            try:
                rows = await self.executor.run(single(statement))
            except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                retry = min(self.period, MAX_RETRY_DELAY)
                self.next_poll = min(self.next_poll, started + retry)
                log.warning("polling for due tasks failed, retrying in %.2fs: %s", retry, exc)
                continue
            finished = loop.time()
            clock, due_kinds, next_due_in, next_kind, oldest, now = rows[0]
            for floor, start, found in zip(self.floors, used, oldest, strict=True):
                if floor is not None and start is None:
                    floor.polled(found, now)
            # The statement's clock was read about halfway through the round trip.
            halfway = (finished - started) / 2
            self.clock_offset = clock - (time.time() - halfway)
            if next_due_in is not None:
                self.poll_at(finished - halfway + next_due_in, next_kind)
            # Every kind with a task due now, those just woken at a known due time too: the
            # claim that wake started may have read the table a moment before the task fell due
            # (a due time becomes a time on this process's clock through an estimate of the
            # database's clock, which a slow round trip skews), and then nothing would wake the
            # kind again before the next poll, a whole period later. When that claim took the
            # task, this wake costs one claim that finds nothing.
            for kind in due_kinds:
                self.wake(kind)

    def _wake_known_due(self, now: float) -> None:
        """Wake the kinds whose known due time has come; keep the others' due times (and
        poll again for the earliest of them)."""
        woken = {kind for kind, when in self.due.items() if when <= now}
        for kind in woken:
            del self.due[kind]
            self.wake(kind)
        if self.due:
            self.next_poll = min(self.next_poll, min(self.due.values()))
