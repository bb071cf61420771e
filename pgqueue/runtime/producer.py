"""The producer side of the runtime: one claim loop per kind, its buffer of claimed tasks, the
kind's deadline timer and the attempts it runs.

The claim loop decides *when* to claim; the named statements in ``sql/queries.sql`` know *how*.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from json import loads as json_loads
from typing import TYPE_CHECKING, Any

from pgqueue.aio import RECANCEL_PERIOD, cancel_and_wait
from pgqueue.delayer import Backoff
from pgqueue.envelope import Envelope
from pgqueue.events import AttemptFinished, KindPaused, TasksClaimed
from pgqueue.logcontext import TaskContext, current_task
from pgqueue.options import terminal_ttl_of, worker_count_of
from pgqueue.registry import KindSpec
from pgqueue.runtime.completer import Result
from pgqueue.runtime.execution import AttemptRunner, DeadlineGuard, Outcome, running_guard
from pgqueue.runtime.limits import FlowControl
from pgqueue.store import operations
from pgqueue.task import Status

if TYPE_CHECKING:
    from pgqueue.runtime.supervisor import Runtime

log = logging.getLogger("pgqueue.worker")

TIMED_OUT = "AttemptTimeout: "  # how an attempt's timeout reads in its outcome's error
# A fired attempt still inside its handler this long after is cancelled again: its handler
# dropped the cancellation (Python 3.11's wait_for can, CPython gh-86296).
REFIRE_AFTER = RECANCEL_PERIOD


class Attempt(DeadlineGuard):
    """A running attempt: its envelope, its claim and its deadline guard."""

    __slots__ = ("envelope", "overrun_capped", "task", "token")

    def __init__(self, envelope: Envelope, token: str) -> None:
        super().__init__()
        self.envelope = envelope
        self.token = token
        self.task: asyncio.Task[None] | None = None
        self.overrun_capped = False  # the heartbeat stopped renewing it (see max_overrun)


class KindWorker:
    """The claim loop of one kind and its in-flight attempts."""

    def __init__(self, spec: KindSpec, runtime: Runtime, runner: AttemptRunner) -> None:
        self.spec = spec
        self.kind = spec.kind
        self.options = spec.options
        self.runtime = runtime
        self.runner = runner
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

        self.lease_renewed_at = self.loop.time()  # when the last heartbeat was sent
        self.max_overrun = self.options.loop.max_overrun
        # Fleet-wide limits (pgqueue/runtime/limits.py); unlimited kinds claim as ever.
        self.flow = FlowControl(self)

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
                        extra=_extra(attempt),
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
                    extra=_extra(attempt),
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
            self._start_buffered(size)
            prefetch = (
                self.options.loop.prefetch_for(size, self.average_attempt)
                if self.flow.claims_ahead
                else 0
            )  # most limited kinds claim only for idle workers: a buffered claim holds a slot
            room = size + prefetch - len(self.inflight) - len(self.buffer)
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
            if room <= 0 or not self.more_due or (busy and room < max(1, (size + prefetch) // 2)):
                # No poll of its own: a notification, the process's due poller, a freed slot
                # or stop wakes it.
                await self.signal.wait()
                self.signal.clear()
                continue
            if self.flow.limited and await self.flow.hold():
                continue  # held back by a limit until a token is due or a slot frees
            limit = min(room, batch_size)
            self.signal.clear()
            claimed_while_paused = self.paused
            # A notification arriving while the claim runs sets more_due again: keep it.
            self.more_due = False
            try:
                if self.flow.limited or await self.flow.overridden():
                    claimed = await self.flow.claim(limit, lease)
                else:
                    claimed = await runtime.executor.run(
                        operations.claim_due_tasks(runtime.queries, self.kind, limit, lease)
                    )
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
                        self.kind, tuple(r[0] for r in claimed), sum(1 for r in claimed if r[-1])
                    )
                )
            now = loop.time()
            self.buffer.extend((row, now) for row in claimed)
        # Claimed but not started: handed back by stop() (attempt refunded).

    def _start_buffered(self, size: int) -> None:
        """Start buffered claims in free slots; release those whose lease ran short (the
        heartbeat could not renew it lately: the database may be out of reach)."""
        if not self.buffer or self.paused:
            return
        now = self.loop.time()
        # A claim whose lease may have less than half its length left is not started:
        # ``lease_left(claimed_at, now) < lease / 2`` for claims made before this cutoff.
        cutoff = now - self.lease / 2
        renewed = self.lease_renewed_at >= cutoff  # the heartbeat vouches for every claim
        inflight = self.inflight
        buffer = self.buffer
        released = []
        while buffer and len(inflight) < size:
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

    def _start(self, row: tuple[Any, ...], now: float, claimed_locally_at: float) -> None:
        (task_id, payload, key, elapsed, left, max_attempts, token, messages, claimed_at,
         lease_lost) = row  # fmt: skip
        if lease_lost:
            log.warning(
                "task %s (%s) was claimed again after a lost lease",
                task_id,
                self.kind,
                extra={"task_id": task_id, "task_kind": self.kind, "attempt": elapsed},
            )
        timeout = self.timeout
        waited = now - claimed_locally_at  # time spent buffered
        envelope = Envelope.claimed(
            task_id,
            self.kind,
            None if payload is None else json_loads(payload),
            key,
            elapsed,
            left,
            max_attempts,
            claimed_at,
            waited + timeout,
            now + timeout,
            [] if messages is None else messages,
        )
        attempt = Attempt(envelope, token)
        self.inflight[task_id] = attempt
        attempt.task = self.loop.create_task(self._execute(attempt), name=f"pgqueue-task-{task_id}")

    def _arm(self) -> None:
        """Schedule the deadline check for the oldest running attempt."""
        for attempt in self.inflight.values():
            self._watchdog = self.loop.call_at(attempt.envelope.monotonic_deadline, self._expire)
            return

    def _expire(self) -> None:
        """Interrupt every attempt whose deadline passed; re-arm for the next one, and sooner
        while an interrupted attempt has not left its handler (it is interrupted again)."""
        self._watchdog = None
        now = self.loop.time()
        refire = False
        for attempt in self.inflight.values():
            deadline = attempt.envelope.monotonic_deadline
            if deadline > now:
                at = min(deadline, now + REFIRE_AFTER) if refire else deadline
                self._watchdog = self.loop.call_at(at, self._expire)
                return
            attempt.fire()
            refire = refire or attempt.firing
        if refire:
            self._watchdog = self.loop.call_at(now + REFIRE_AFTER, self._expire)

    async def _execute(self, attempt: Attempt) -> None:
        envelope = attempt.envelope
        current_task.set(TaskContext(envelope.id, self.kind, envelope.attempt))
        running_guard.set(attempt)
        loop = self.loop
        started = loop.time()
        try:
            outcome = await self.runner.run(envelope, attempt)
            duration = loop.time() - started
            if attempt.thread_running():
                await self._wait_for_threads(attempt, outcome)
        except asyncio.CancelledError:
            return  # aborted: the claim is released by stop(ABORT)
        except BaseException as exc:
            log.exception("attempt of task %s crashed", envelope.id)
            outcome = Outcome(Status.MUST_RETRY, delay=1.0, error=f"{type(exc).__name__}: {exc}")
            duration = loop.time() - started
        finally:
            if self.inflight.get(envelope.id) is attempt:
                del self.inflight[envelope.id]
            # The attempt is in this task's context (running_guard): dropping its reference to
            # the task breaks the cycle, so both are freed now rather than by the cyclic GC.
            attempt.task = None
            if not self.inflight and self._watchdog is not None:
                self._watchdog.cancel()  # nothing left to watch
                self._watchdog = None
            self.signal.set()
        average = self.average_attempt
        self.average_attempt = duration if average is None else average + (duration - average) / 8
        if self.runtime.events.listeners:
            self.runtime.events.emit(
                AttemptFinished(
                    self.kind,
                    envelope.id,
                    envelope.attempt,
                    outcome.status.value,
                    duration,
                    outcome.error is not None and outcome.error.startswith(TIMED_OUT),
                )
            )
        self.runtime.writer.submit(
            Result(
                envelope.id,
                attempt.token,
                self.kind,
                outcome,
                self.keep_messages,
                self.delete_finished and outcome.status.is_terminal,
                envelope.attempt,
            )
        )
        if (
            self.buffer
            and not self.runtime.stopping
            and not self.paused
            and len(self.inflight) < self.size
        ):
            # Take the next buffered claim at once: the claim loop may be waiting on a claim.
            try:
                self._start_buffered(self.size)
            except Exception:  # the claim loop starts them on its next turn
                log.exception("starting buffered tasks of %r failed", self.kind)

    async def _wait_for_threads(self, attempt: Attempt, outcome: Outcome) -> None:
        """A sync callable of this attempt still runs on its thread past the attempt's end
        (deadline or cancellation): keep the claim (the heartbeat renews it) and the worker
        slot until the thread returns, so no retry can overlap it; then write the outcome
        decided at the deadline."""
        runtime = self.runtime
        runtime.stuck_threads += 1
        log.warning(
            "task %s (%s) attempt %d ended (%s) but its sync handler still runs on its thread;"
            " the task stays claimed and its worker slot taken until the thread returns",
            attempt.envelope.id,
            self.kind,
            attempt.envelope.attempt,
            outcome.status.value,
            extra=_extra(attempt),
        )
        try:
            await asyncio.wait([job.returned for job in attempt.threads])
        finally:
            runtime.stuck_threads -= 1
        log.info(
            "the thread of task %s (%s) attempt %d returned",
            attempt.envelope.id,
            self.kind,
            attempt.envelope.attempt,
            extra=_extra(attempt),
        )

    def cancel(self, task_id: int) -> None:
        """The task was cancelled in the database: tell its handler and end it now."""
        attempt = self.inflight.get(task_id)
        if attempt is None:
            return
        attempt.envelope.request_cancel()
        self._interrupt(attempt)

    def _interrupt(self, attempt: Attempt) -> None:
        """Interrupt an attempt before its deadline (cancelled, or its claim lost), and again
        every ``REFIRE_AFTER`` while it has not left its handler: a handler can lose the
        cancellation (CPython gh-86296), and the deadline may be far off."""
        attempt.fire()
        if attempt.firing:
            self.loop.call_later(REFIRE_AFTER, self._refire, attempt)

    def _refire(self, attempt: Attempt) -> None:
        if attempt.firing and self.inflight.get(attempt.envelope.id) is attempt:
            self._interrupt(attempt)

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


def _extra(attempt: Attempt) -> dict[str, Any]:
    envelope = attempt.envelope
    return {"task_id": envelope.id, "task_kind": envelope.kind, "attempt": envelope.attempt}
