"""The producer side of the runtime: one claim loop per kind, its buffer of claimed tasks, the
kind's deadline timer and the attempts it runs.

The claim loop decides *when* to claim; the named statements in ``sql/queries.sql`` know *how*.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from pgqueue.aio import cancel_and_wait
from pgqueue.delayer import Backoff
from pgqueue.events import KindPaused, TasksClaimed
from pgqueue.options import terminal_ttl_of, worker_count_of
from pgqueue.registry import KindSpec
from pgqueue.runtime.attempts import Attempt, AttemptLifecycle, log_extra
from pgqueue.runtime.completer import ResultWriter
from pgqueue.runtime.context import RuntimeContext
from pgqueue.runtime.execution import AttemptRunner
from pgqueue.runtime.floors import ClaimFloor
from pgqueue.runtime.limits import FlowControl
from pgqueue.store import operations

log = logging.getLogger("pgqueue.worker")


class KindWorker(AttemptLifecycle):
    """The claim loop of one kind and its in-flight attempts."""

    def __init__(
        self, spec: KindSpec, runtime: RuntimeContext, runner: AttemptRunner, writer: ResultWriter
    ) -> None:
        self.spec = spec
        self.kind = spec.kind
        self.options = spec.options
        self.runtime = runtime
        self.runner = runner
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.signal = asyncio.Event()
        self.more_due = False  # the poller's first poll, at start, wakes the kinds with due work
        # Running attempts in start order. Every attempt of a kind gets the same timeout, so
        # this is also deadline order: one timer, for the oldest, enforces every deadline.
        self.inflight: dict[int, Attempt] = {}
        self.buffer: deque[tuple[tuple[Any, ...], float]] = deque()  # claimed, not started
        self.size = 0
        self.average_attempt: float | None = None  # moving average of attempt durations, s
        self.lease = self.options.lease_seconds
        self.timeout = runner.timeout
        self.keep_messages = self.options.max_task_error_messages
        self.delete_finished = False  # terminal TTL of zero, re-read before every claim
        self._watchdog: asyncio.TimerHandle | None = None
        # Set by a pause notification: start nothing, hand buffered claims back. The claim
        # statement checks the stored flag itself; while paused the loop only re-checks it
        # every poll period (in case the resume notification was missed).
        self.paused = False
        self._starting = False  # inside _start_buffered: an attempt run eagerly ended in it
        self._resume_scheduled = False  # _start_buffered stopped short: it goes on next turn

        self.lease_renewed_at = self.loop.time()  # when the last heartbeat was sent
        self.max_overrun = self.options.loop.max_overrun
        # Fleet-wide limits (pgqueue/runtime/limits.py); unlimited kinds claim as ever.
        self.flow = FlowControl(self)
        # Where the next claim starts reading the open tasks (pgqueue/runtime/floors.py).
        self.floor = ClaimFloor(self.loop.time)

    def pause(self) -> None:
        """The kind was paused: start no more attempts; release claims not yet started."""
        if not self.paused:
            self.paused = True
            claims = self.take_buffer()
            log.info("kind %r paused: %d buffered claim(s) handed back", self.kind, len(claims))
            if claims:
                self.runtime.release_later(claims)
            if self.runtime.events.listeners:
                self.runtime.events.emit(KindPaused(self.kind, True, len(claims)))

    def resume(self) -> None:
        """The kind was resumed: claim at once."""
        if self.paused:
            self.paused = False
            log.info("kind %r resumed", self.kind)
            if self.runtime.events.listeners:
                self.runtime.events.emit(KindPaused(self.kind, False, 0))
        self.notify()

    def lease_left(self, claimed_at: float, now: float) -> float:
        """Seconds the lease of a claim made at ``claimed_at`` surely lasts (as seen here)."""
        return max(claimed_at, self.lease_renewed_at) + self.lease - now

    def held(self, now: float) -> list[tuple[int, str]]:
        """Claims the heartbeat renews: buffered ones and running attempts (a sync handler past
        its deadline only up to ``max_overrun``)."""
        claims = [(row[0], row[6]) for row, _ in self.buffer]
        for attempt in self.inflight.values():
            if attempt.envelope.monotonic_deadline + self.max_overrun < now:
                if not attempt.overrun_capped:
                    attempt.overrun_capped = True
                    log.error(
                        "task %s (%s) still runs %.0fs past its deadline: its lease is no longer"
                        " renewed, so it may be retried while the thread still runs",
                        attempt.envelope.id,
                        self.kind,
                        self.max_overrun,
                        extra=log_extra(attempt),
                    )
                continue
            claims.append((attempt.envelope.id, attempt.token))
        return claims

    def claims_lost(self, lost: set[tuple[int, str]]) -> None:
        """The heartbeat found these claims gone: cancelled, or taken over after a lost lease."""
        ids = {c[0] for c in lost}
        if self.buffer:
            kept = [(row, at) for row, at in self.buffer if (row[0], row[6]) not in lost]
            self.buffer.clear()
            self.buffer.extend(kept)
        for task_id in ids:
            attempt = self.inflight.get(task_id)
            if attempt is not None and (task_id, attempt.token) in lost:
                log.warning(
                    "task %s (%s) lost its claim while running; stopping the attempt",
                    task_id,
                    self.kind,
                    extra=log_extra(attempt),
                )
                attempt.envelope.request_cancel()
                self._interrupt(attempt)

    def notify(self) -> None:
        self.more_due = True
        self.signal.set()

    def _current_size(self) -> int:
        try:
            self.size = worker_count_of(self.options)
        except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
            log.error("worker_count provider of %r failed: %s", self.kind, exc)
        return self.size

    def _read_ttl(self) -> None:
        try:
            self.delete_finished = terminal_ttl_of(self.options) == 0
        except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
            log.error("terminal_tasks_ttl provider of %r failed: %s", self.kind, exc)
            self.delete_finished = False

    async def run(self) -> None:
        runtime = self.runtime
        loop = self.loop
        backoff = Backoff(runtime.max_db_retry_delay)
        batch_size = self.options.loop.claim_batch_size
        lease = self.lease
        poll = self.options.loop.poll_period
        recheck_at = 0.0
        while not runtime.stopping:
            size = self._current_size()
            self._read_ttl()
            prefetch = (
                self.options.loop.prefetch_for(size, self.average_attempt)
                if self.flow.claims_ahead
                else 0
            )  # most limited kinds claim only for idle workers: a buffered claim holds a slot
            capacity = size + prefetch
            half = max(1, capacity // 2)
            # Start buffered claims until there is room for the next claim; the rest start
            # while it runs (attempts that end at once would otherwise leave the claim to wait
            # for all of them).
            self._start_buffered(size, keep=capacity - half)
            room = capacity - len(self.inflight) - len(self.buffer)
            if self.paused:
                now = loop.time()
                if now < recheck_at:
                    try:
                        async with asyncio.timeout(recheck_at - now):
                            await self.signal.wait()
                    except TimeoutError:
                        pass
                    self.signal.clear()
                    continue
                recheck_at = now + poll
                room = max(room, 1)  # one claim checks the stored flag
                self.more_due = True
            # Claim when work may be due and at least half the room is free (bigger batches,
            # fewer round trips), or at once when nothing is running or buffered.
            busy = bool(self.inflight or self.buffer)
            if room <= 0 or not self.more_due or (busy and room < half):
                # No poll of its own: a notification, the process's due poller, a freed slot
                # or stop wakes it.
                await self.signal.wait()
                self.signal.clear()
                continue
            if self.flow.limited and await self.flow.hold():
                continue  # held back by a limit until a token is due or a slot frees
            # At most half the capacity, unless idle workers need more: from an empty buffer
            # two half-size claims start work after the first one's rows, where one claim of
            # the whole capacity would leave every worker waiting for all of its rows (the next
            # claim goes out while the first half runs).
            limit = min(room, batch_size, max(half, size - len(self.inflight)))
            self.signal.clear()
            claimed_while_paused = self.paused
            # A notification arriving while the claim runs sets more_due again: keep it.
            self.more_due = False
            try:
                if self.flow.limited or await self.flow.overridden():
                    claimed = await self.flow.claim(limit, lease)
                else:
                    floor = self.floor.current()
                    result = await runtime.executor.run(
                        operations.claim_due_tasks_above(
                            runtime.queries, self.kind, limit, lease, floor
                        )
                    )
                    claimed = result.rows
                    self.floor.claimed(floor, len(claimed), limit, result.oldest_due, result.clock)
            except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                delay = backoff.next()
                log.warning("claiming %r failed, retrying in %.2fs: %s", self.kind, delay, exc)
                await runtime.sleep_unless_stopping(delay)
                continue
            backoff.reset()
            if len(claimed) == limit:
                self.more_due = True
            if not claimed:
                continue
            if self.paused:
                if not claimed_while_paused:
                    # The pause arrived while this claim ran: hand its rows back unstarted.
                    self.runtime.release_later([(row[0], row[6]) for row in claimed])
                    continue
                self.resume()  # a claim after the pause got rows: it was resumed meanwhile
            if runtime.events.listeners:
                runtime.events.emit(
                    TasksClaimed(
                        self.kind,
                        tuple(r[0] for r in claimed),
                        sum(1 for r in claimed if r[operations.LEASE_LOST]),
                    )
                )
            now = loop.time()
            self.buffer.extend((row, now) for row in claimed)
        # Claimed but not started: handed back by stop() (attempt refunded).

    def _start_buffered(self, size: int, keep: int = 0) -> None:
        """Start buffered claims in free slots; release those whose lease ran short (the
        heartbeat could not renew it lately: the database may be out of reach).

        With ``keep``, stop once no more than ``keep`` tasks are running or buffered, and start
        the rest in the loop's next turn: the claim loop claims in between.
        """
        if not self.buffer or self.paused or self._starting:
            return  # (an attempt that ended at once, in this loop, asks again: it goes on here)
        self._starting = True
        try:
            self._start_up_to(size, keep)
        finally:
            self._starting = False
        if self.buffer and len(self.inflight) < size and not self._resume_scheduled:
            self._resume_scheduled = True
            self.loop.call_soon(self._resume_starting)

    def _resume_starting(self) -> None:
        self._resume_scheduled = False
        if not self.runtime.stopping:
            self._start_buffered(self.size)

    def _start_up_to(self, size: int, keep: int) -> None:
        now = self.loop.time()
        # A claim whose lease may have less than half its length left is not started:
        # ``lease_left(claimed_at, now) < lease / 2`` for claims made before this cutoff.
        cutoff = now - self.lease / 2
        renewed = self.lease_renewed_at >= cutoff  # the heartbeat vouches for every claim
        inflight = self.inflight
        buffer = self.buffer
        released = []
        while buffer and len(inflight) < size and len(inflight) + len(buffer) > keep:
            row, claimed_at = buffer.popleft()
            if not renewed and claimed_at < cutoff:
                released.append((row[0], row[6]))
                continue
            self._start(row, now, claimed_at)
        if released:
            self.runtime.release_later(released)
        if self._watchdog is None and inflight:
            self._arm()

    def take_buffer(self) -> list[tuple[int, str]]:
        """Empty the buffer of claimed-not-started tasks; return their claims to release."""
        claims = [(row[0], row[6]) for row, _ in self.buffer]
        self.buffer.clear()
        return claims

    def close(self) -> None:
        """Drop the deadline timer (after the last attempt ended)."""
        self.flow.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def drain(self) -> None:
        tasks = [a.task for a in self.inflight.values() if a.task is not None]
        if tasks:
            await asyncio.wait(tasks)

    async def abort(self) -> list[tuple[int, str]]:
        """Cancel every in-flight attempt; return the claims to release.

        An attempt whose sync handler still runs on its thread cannot be interrupted: its claim
        is not released (a retry would overlap it); its task returns when its lease ends.
        """
        attempts = list(self.inflight.values())
        for attempt in attempts:
            attempt.envelope.request_cancel()
        # Cancelled again until they end: a handler may drop one cancellation (gh-86296).
        await cancel_and_wait([a.task for a in attempts if a.task is not None])
        claims = [(a.envelope.id, a.token) for a in attempts if not a.thread_running()]
        if len(claims) < len(attempts):
            log.warning(
                "%d task(s) of %r keep their claim: their sync handlers still run on threads;"
                " they return when their leases end",
                len(attempts) - len(claims),
                self.kind,
            )
        return claims
