"""The worker runtime: the worker loops of one queue, on one asyncio event loop, started,
supervised and stopped together.

Its parts live in their own modules: :mod:`.producer` (per-kind claim loops and their
attempts), :mod:`.completer` (batched result writes), :mod:`.notifier` (LISTEN wake-ups) and
:mod:`.maintenance` (heartbeat, retention, periodic schedules). They see the runtime as the
:class:`~.context.RuntimeContext` it implements. This module starts and stops them, restarts a
loop that crashes, hands claims back to the queue and routes wake-ups to the kinds.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence

from pgqueue.aio import cancel_and_wait
from pgqueue.delayer import Backoff
from pgqueue.envelope import Stamp
from pgqueue.events import ClaimsReleased, EventBus
from pgqueue.options import worker_count_of
from pgqueue.periodic import Periodic
from pgqueue.registry import KindRegistry
from pgqueue.runtime.completer import (
    Result,
    ResultWriter,
)
from pgqueue.runtime.context import RuntimeContext
from pgqueue.runtime.execution import AttemptRunner
from pgqueue.runtime.maintenance import Heartbeat, PeriodicScheduler, Sweeper
from pgqueue.runtime.notifier import Notifier
from pgqueue.runtime.poller import DuePoller
from pgqueue.runtime.producer import KindWorker
from pgqueue.runtime.statistics import StatisticsKeeper
from pgqueue.runtime.threads import SyncThreadPool
from pgqueue.store import operations
from pgqueue.store.executor import AsyncExecutor
from pgqueue.store.queries import Queries
from pgqueue.task import Status

log = logging.getLogger("pgqueue.worker")


class StopMode(enum.Enum):
    """How ``stop`` treats in-flight attempts."""

    DRAIN = "drain"  # wait for them to finish and be recorded
    ABORT = "abort"  # cancel them and hand their tasks back at once, attempt refunded


class Runtime(RuntimeContext):
    """Runs the worker loops of one queue's handled kinds on the current event loop."""

    def __init__(
        self,
        registry: KindRegistry,
        queries: Queries,
        executor: AsyncExecutor,
        stamps: Sequence[Stamp] = (),
        events: EventBus | None = None,
        periodics: Sequence[Periodic] = (),
        max_threads: int | None = None,
    ) -> None:
        super().__init__(registry, queries, executor, events)
        self.periodics = list(periodics)
        self.stamps = list(stamps)
        self.max_threads = max_threads
        self.workers: dict[str, KindWorker] = {}  # filled at start; the pieces share this dict
        self.writer = ResultWriter(
            self, lambda: [w.lease for w in self.workers.values()], self.retries_written
        )
        self._background: list[asyncio.Task[None]] = []
        self._pending_release: set[asyncio.Task[None]] = set()
        self._threads: SyncThreadPool | None = None
        self.stopped = asyncio.Event()
        self.heartbeat = Heartbeat(self, self.workers, self.writer)
        self.notifier = Notifier(self, self.workers)

    async def start(self) -> None:
        specs = self.registry.handled()
        total = sum(max(1, worker_count_of(s.options)) for s in specs)
        self._threads = SyncThreadPool(self.max_threads or max(8, 2 * total))
        if specs:
            self.max_db_retry_delay = min(s.options.loop.max_db_retry_delay for s in specs)
        await self.executor.open()
        for spec in specs:
            runner = AttemptRunner(spec, self.stamps, self._threads)
            self.workers[spec.kind] = KindWorker(spec, self, runner, self.writer)
        background: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if specs:
            self.poller = DuePoller(
                self.executor,
                self.queries,
                list(self.workers),
                self.wake,
                min(float(s.options.loop.poll_period) for s in specs),
                {kind: worker.floor for kind, worker in self.workers.items()},
            )
            background.append(("pgqueue-poller", self.poller.run))
        background += [
            ("pgqueue-listener", self.notifier.run),
            ("pgqueue-results", self.writer.run),
            ("pgqueue-heartbeat", self.heartbeat.run),
            ("pgqueue-sweeper", Sweeper(self, self.workers).run),
            ("pgqueue-statistics", StatisticsKeeper(self).run),
            *(
                (f"pgqueue-periodic-{p.kind}", PeriodicScheduler(self, p).run)
                for p in self.periodics
            ),
        ]
        self._background = [
            asyncio.create_task(self._supervise(name, loop), name=name) for name, loop in background
        ]
        self._loops = [
            asyncio.create_task(self._supervise(f"pgqueue-claim-{w.kind}", w.run))
            for w in self.workers.values()
        ]

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a loop; restart it if it ever raises. Each loop handles its own expected errors
        (database errors are retried inside); this is the net for a bug, so that no loop of a
        running queue dies for good."""
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s crashed; restarting it in 1 s", name)
                await self.sleep_unless_stopping(1.0)
                if self.stopping and name.startswith("pgqueue-claim-"):
                    return

    async def abort_inflight(self) -> None:
        """Turn a stop in progress into an abort: cancel the running attempts and hand their
        tasks back (a drain that takes too long, then ``stop(ABORT)``)."""
        claims: list[tuple[int, str]] = []
        for worker in self.workers.values():
            claims.extend(worker.take_buffer())
            claims.extend(await worker.abort())
        await self._release(claims)

    async def stop(self, mode: StopMode) -> None:
        try:
            await self._stop(mode)
        finally:
            self.stopped.set()

    async def _stop(self, mode: StopMode) -> None:
        self.signal_stop()
        for worker in self.workers.values():
            worker.signal.set()
        await asyncio.gather(*self._loops, return_exceptions=True)
        claims: list[tuple[int, str]] = []
        for worker in self.workers.values():
            claims.extend(worker.take_buffer())
        if mode is StopMode.ABORT:
            for worker in self.workers.values():
                claims.extend(await worker.abort())
            await self._release(claims)
        else:
            await self._release(claims)
            for worker in self.workers.values():
                await worker.drain()
        if self._pending_release:
            await asyncio.gather(*self._pending_release, return_exceptions=True)
        for worker in self.workers.values():
            worker.close()
        await self.writer.close()
        await self.writer.idle.wait()
        if self.poller is not None:
            self.poller.close()
        await cancel_and_wait(self._background)
        if self._threads is not None:
            self._threads.close()

    def release_later(self, claims: list[tuple[int, str]]) -> None:
        # a buffered task whose lease ran short, a paused kind's buffer, an unstarted claim
        task = asyncio.create_task(self._release(claims))
        self._pending_release.add(task)
        task.add_done_callback(self._pending_release.discard)

    async def _release(self, claims: list[tuple[int, str]]) -> None:
        if not claims:
            return
        backoff = Backoff(self.max_db_retry_delay)
        for _ in range(10):
            try:
                rows = await self.executor.run(operations.release_claims(self.queries, claims))
                kinds = sorted({row[1] for row in rows})
                if kinds:
                    await self.executor.run(operations.notify_kinds(self.queries, kinds))
                log.info("released %d claimed task(s) back to the queue", len(rows))
                self.events.emit(ClaimsReleased(tuple(row[0] for row in rows)))
                return
            except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                log.warning("releasing claims failed, retrying: %s", exc)
                await asyncio.sleep(backoff.next())
        log.error(
            "could not release %d claim(s); they return when their leases expire", len(claims)
        )

    def wake(self, kind: str, from_head: bool = False, due_at: float | None = None) -> None:
        worker = self.workers.get(kind)
        if worker is not None:
            if from_head:
                worker.floor.reset()
            elif due_at is not None:
                worker.floor.due_at(due_at)
            worker.notify()

    def retries_written(self, results: Sequence[Result]) -> None:
        """Retries were just written: wake their kinds when they fall due, not a poll later."""
        poller = self.poller
        if poller is None:
            return
        now = asyncio.get_running_loop().time()
        for result in results:
            if result.outcome.status is Status.MUST_RETRY:
                if result.outcome.delay <= 0:
                    self.wake(result.kind)
                else:
                    poller.poll_at(now + result.outcome.delay, result.kind)
