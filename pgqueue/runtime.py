"""The worker runtime: per-kind claim loops, attempts, batched result writes, wake-ups and
retention, all on one asyncio event loop.

The claim loop decides *when* to claim; the named statements in ``sql/queries.sql`` know *how*.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from json import loads as json_loads
from typing import Any

from pgqueue import operations
from pgqueue.aio import cancel_and_wait
from pgqueue.delayer import Backoff
from pgqueue.envelope import Envelope, Stamp
from pgqueue.events import (
    AttemptFinished,
    ClaimsReleased,
    EventBus,
    KindPaused,
    ResultsWritten,
    TasksClaimed,
    TerminalTasksSwept,
)
from pgqueue.execution import AttemptRunner, DeadlineGuard, Outcome, running_guard
from pgqueue.executor import AsyncExecutor, Operation, Statement, Steps
from pgqueue.logcontext import TaskContext, current_task
from pgqueue.operations import int_array, uuid_array
from pgqueue.options import terminal_ttl_of, worker_count_of
from pgqueue.periodic import Periodic
from pgqueue.poller import DuePoller
from pgqueue.queries import Queries
from pgqueue.registry import KindRegistry, KindSpec
from pgqueue.task import Status, encode_payload
from pgqueue.threads import DaemonThreadPool

log = logging.getLogger("pgqueue.worker")

MAX_RESULT_BATCH = 5000
TIMED_OUT = "AttemptTimeout: "  # how an attempt's timeout reads in its outcome's error
HEARTBEAT_SHARE = 0.25  # beat every quarter of the lease: three beats may fail before it ends
LISTEN_CHECK_PERIOD = 2.0  # seconds of listener silence after which it is pinged
LISTEN_ECHO_TIMEOUT = 3.0  # seconds a ping's echo may take before the listener is replaced


class StopMode(enum.Enum):
    """How ``stop`` treats in-flight attempts."""

    DRAIN = "drain"  # wait for them to finish and be recorded
    ABORT = "abort"  # cancel them and hand their tasks back at once, attempt refunded


@dataclass(slots=True)
class Result:
    """An outcome waiting to be written, with what guards it."""

    task_id: int
    token: str
    kind: str
    outcome: Outcome
    keep_messages: int
    delete: bool
    attempt: int = 0  # the attempt number, for log lines about the task


class Attempt(DeadlineGuard):
    """A running attempt: its envelope, its claim and its deadline guard."""

    __slots__ = ("envelope", "overrun_capped", "task", "token")

    def __init__(self, envelope: Envelope, token: str) -> None:
        super().__init__()
        self.envelope = envelope
        self.token = token
        self.task: asyncio.Task[None] | None = None
        self.overrun_capped = False  # the heartbeat stopped renewing it (see max_overrun)


class ResultWriter:
    """Writes attempt results in batches: whatever accumulated while the last write ran.

    Writes run on their own connection, concurrently with the claim loops. A failed write is
    retried with backoff until it succeeds: the heartbeat keeps the leases of unwritten results
    alive, and a result whose claim was lost meanwhile is not applied (its claim token no longer
    matches), so retrying is always safe. Only while the runtime stops does the writer give up,
    one lease after it was asked to close (the tasks then come back when their leases end).
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.pending: list[Result] = []
        self.writing: list[Result] = []  # the batch being written (its leases are renewed)
        self.give_up_at: float | None = None
        self.signal = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.closing = False

    def submit(self, result: Result) -> None:
        self.pending.append(result)
        self.idle.clear()
        self.signal.set()

    async def run(self) -> None:
        while True:
            await self.signal.wait()
            self.signal.clear()
            while self.pending:
                batch = self.pending[:MAX_RESULT_BATCH]
                del self.pending[:MAX_RESULT_BATCH]
                await self._write(batch)
            self.idle.set()
            if self.closing:
                return

    async def _write(self, batch: list[Result]) -> None:
        self.writing = batch
        try:
            await self._write_until_done(batch)
        finally:
            self.writing = []

    async def _write_until_done(self, live: list[Result]) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.runtime.max_db_retry_delay)
        while True:
            try:
                applied = await self.runtime.executor.run(
                    record_results(self.runtime.queries, live)
                )
            except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                if self.give_up_at is not None and loop.time() >= self.give_up_at:
                    for lost in live:
                        log.error(
                            "result of task %s not written before stop; the task returns when"
                            " its lease ends",
                            lost.task_id,
                            extra={"task_id": lost.task_id, "task_kind": lost.kind},
                        )
                    return
                delay = backoff.next()
                log.warning("writing %d result(s) failed, retrying in %.2fs: %s",
                            len(live), delay, exc)  # fmt: skip
                await asyncio.sleep(delay)
                continue
            self.runtime.retries_written(live)
            if self.runtime.events.listeners:
                self.runtime.events.emit(
                    ResultsWritten(
                        tuple(
                            (r.task_id, r.kind, r.outcome.status.value, r.task_id in applied)
                            for r in live
                        )
                    )
                )
            return

    async def close(self) -> None:
        leases = [w.lease for w in self.runtime.workers.values()]
        self.give_up_at = asyncio.get_running_loop().time() + max(leases, default=10.0)
        self.closing = True
        self.signal.set()

    def held(self, kind: str) -> list[tuple[int, str]]:
        """Claims of ``kind`` whose results wait to be written."""
        return [(r.task_id, r.token) for r in (*self.writing, *self.pending) if r.kind == kind]


class Heartbeat:
    """Keeps the lease of every claim this process holds alive while it holds it.

    A claim leases its row for the kind's ``lease_margin`` only. Every quarter of that, one
    statement per kind (``extend_leases``) renews the leases of all the kind's claims held here —
    buffered, running (including a sync handler still on its thread past its deadline, up to
    ``max_overrun``), and with a result waiting to be written — guarded by their claim tokens.
    So a long attempt is never re-claimed while it runs, and a dead process's tasks come back
    within about one lease. A running attempt whose claim was not renewed (the task was
    cancelled, or its lease was lost and the task re-claimed) is told to stop.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = {kind: loop.time() for kind in self.runtime.workers}
        while True:
            now = loop.time()
            for kind, worker in self.runtime.workers.items():
                if next_beat[kind] > now:
                    continue
                next_beat[kind] = now + worker.lease * HEARTBEAT_SHARE
                try:
                    await self.beat(worker)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                    log.warning("renewing the leases of %r failed: %s", kind, exc)
            wait = min(next_beat.values(), default=now + 60) - loop.time()
            await asyncio.sleep(max(wait, 0.01))

    async def beat(self, worker: KindWorker) -> None:
        loop = worker.loop
        sent = loop.time()
        claims = worker.held(sent) + self.runtime.writer.held(worker.kind)
        if not claims:
            worker.lease_renewed_at = sent
            return
        renewed = await self.runtime.executor.run(
            operations.extend_leases(self.runtime.queries, claims, worker.lease)
        )
        worker.lease_renewed_at = sent
        if len(renewed) < len(claims):
            worker.claims_lost({c for c in claims if c[0] not in renewed})


def record_results(queries: Queries, results: Sequence[Result]) -> Operation[set[int]]:
    """Delete finished rows with zero retention and update the rest, both guarded by the claim
    token; returns the ids whose result applied (a task cancelled or re-claimed meanwhile is
    not). Each statement also adds its applied outcomes to the per-minute throughput rollup,
    so the history costs no extra round trip and is exact."""
    deletes = [r for r in results if r.delete]
    updates = [r for r in results if not r.delete]

    def steps() -> Steps[set[int]]:
        applied: set[int] = set()
        if deletes:
            rows = yield Statement(
                queries["delete_finished_tasks"],
                {
                    "ids": int_array(r.task_id for r in deletes),
                    "tokens": uuid_array(r.token for r in deletes),
                    "statuses": [r.outcome.status.value for r in deletes],
                },
            )
            applied.update(row[0] for row in rows)
        if updates:
            rows = yield Statement(
                queries["record_outcomes"],
                {
                    "ids": int_array(r.task_id for r in updates),
                    "tokens": uuid_array(r.token for r in updates),
                    "statuses": [r.outcome.status.value for r in updates],
                    "delays": [r.outcome.delay for r in updates],
                    "errors": [r.outcome.error for r in updates],
                    "keeps": [r.keep_messages for r in updates],
                },
            )
            applied.update(row[0] for row in rows)
        due_now = retried_at_once(results, applied) if applied else None
        if due_now:
            # Every process handling these kinds claims the retries now, not at its next poll.
            yield Statement(queries["notify_kinds"], {"channel": queries.channel, "kinds": due_now})
        return applied

    return Operation(steps())


def retried_at_once(results: Sequence[Result], applied: set[int]) -> list[str]:
    """Kinds with an applied retry that is due at once (``Decision.retry_now()``)."""
    return sorted(
        {
            r.kind
            for r in results
            if r.outcome.status is Status.MUST_RETRY
            and r.outcome.delay <= 0
            and r.task_id in applied
        }
    )


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
                attempt.fire()

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
            prefetch = self.options.loop.prefetch_for(size, self.average_attempt)
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
            limit = min(room, batch_size)
            self.signal.clear()
            claimed_while_paused = self.paused
            # A notification arriving while the claim runs sets more_due again: keep it.
            self.more_due = False
            try:
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
        needed = self.lease / 2
        inflight = self.inflight
        buffer = self.buffer
        released = []
        while buffer and len(inflight) < size:
            row, claimed_at = buffer.popleft()
            if self.lease_left(claimed_at, now) < needed:
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
        envelope = Envelope(
            id=task_id,
            kind=self.kind,
            payload=None if payload is None else json_loads(payload),
            external_key=key,
            attempt=elapsed,
            attempts_left=left,
            max_attempts=max_attempts,
            deadline=claimed_at + timedelta(seconds=waited + timeout),
            monotonic_deadline=now + timeout,
            messages=messages,
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
        """Interrupt every attempt whose deadline passed; re-arm for the next one."""
        self._watchdog = None
        now = self.loop.time()
        for attempt in self.inflight.values():
            if attempt.envelope.monotonic_deadline > now:
                self._watchdog = self.loop.call_at(
                    attempt.envelope.monotonic_deadline, self._expire
                )
                return
            attempt.fire()

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
        attempt.fire()

    def close(self) -> None:
        """Drop the deadline timer (after the last attempt ended)."""
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
            if attempt.task is not None:
                attempt.task.cancel()
        tasks = [a.task for a in attempts if a.task is not None]
        if tasks:
            await asyncio.wait(tasks)
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


class Runtime:
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
        self.periodics = list(periodics)
        self.events = events or EventBus()
        self.registry = registry
        self.queries = queries
        self.executor = executor
        self.stamps = list(stamps)
        self.max_threads = max_threads
        self.stopping = False
        self.workers: dict[str, KindWorker] = {}
        self.writer = ResultWriter(self)
        self._stop_event = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._pending_release: set[asyncio.Task[None]] = set()
        self._threads: DaemonThreadPool | None = None
        self.max_db_retry_delay = 5.0
        self.listening = asyncio.Event()
        self.stopped = asyncio.Event()
        self.heartbeat = Heartbeat(self)
        # Attempts that ended (deadline or cancel) while their sync handler's thread still runs:
        # each keeps its claim and worker slot until the thread returns. A gauge for metrics.
        self.stuck_threads = 0
        self.listener_restarts = 0  # silent LISTEN connections detected and replaced
        self.poller: DuePoller | None = None

    async def sleep_unless_stopping(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stop_event.wait()
        except TimeoutError:
            pass

    async def start(self) -> None:
        specs = self.registry.handled()
        total = sum(max(1, worker_count_of(s.options)) for s in specs)
        self._threads = DaemonThreadPool(self.max_threads or max(8, 2 * total))
        if specs:
            self.max_db_retry_delay = min(s.options.loop.max_db_retry_delay for s in specs)
        await self.executor.open()
        for spec in specs:
            runner = AttemptRunner(spec, self.stamps, self._threads)
            self.workers[spec.kind] = KindWorker(spec, self, runner)
        background: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if specs:
            self.poller = DuePoller(
                self.executor,
                self.queries,
                list(self.workers),
                self._wake,
                min(float(s.options.loop.poll_period) for s in specs),
            )
            background.append(("pgqueue-poller", self.poller.run))
        background += [
            ("pgqueue-listener", self._listen),
            ("pgqueue-results", self.writer.run),
            ("pgqueue-heartbeat", self.heartbeat.run),
            ("pgqueue-sweeper", self._sweep),
            *((f"pgqueue-periodic-{p.kind}", partial(self._schedule, p)) for p in self.periodics),
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
        self.stopping = True
        self._stop_event.set()
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
        """Release claims in the background (a buffered task whose lease ran short)."""
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

    def _wake(self, kind: str) -> None:
        worker = self.workers.get(kind)
        if worker is not None:
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
                    self._wake(result.kind)
                else:
                    poller.poll_at(now + result.outcome.delay, result.kind)

    def _dispatch(self, payload: str) -> None:
        prefix, _, value = payload.partition(":")
        if prefix == "p":
            self._wake(value)
        elif prefix in ("pause", "resume"):
            worker = self.workers.get(value)
            if worker is not None:
                if prefix == "pause":
                    worker.pause()
                else:
                    worker.resume()
        elif prefix == "d":
            epoch, _, kind = value.partition(":")
            if kind in self.workers and self.poller is not None:
                try:
                    self.poller.due_at_epoch(float(epoch), kind)
                except ValueError:
                    return
        elif prefix == "c":
            try:
                task_id = int(value)
            except ValueError:
                return
            for worker in self.workers.values():
                worker.cancel(task_id)

    async def _listen(self) -> None:
        backoff = Backoff(self.max_db_retry_delay)
        while True:
            try:
                async with self.executor.listen(self.queries.channel) as payloads:
                    backoff.reset()
                    self.listening.set()
                    if self.poller is not None:
                        self.poller.poll_soon()  # anything pushed while we were not listening
                    await self._consume(payloads)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                self.listening.clear()
                delay = backoff.next()
                log.warning("LISTEN connection lost, reconnecting in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)

    async def _consume(self, payloads: Any) -> None:
        """Dispatch notifications; when the listener has been silent for a while, ping it (a
        NOTIFY sent on another connection must come back on it) and raise if the echo is late:
        a socket that went silent without closing (a frozen backend, a dead NAT entry, a
        network partition) is then replaced within seconds instead of never."""
        loop = asyncio.get_running_loop()
        heard = asyncio.Event()
        echo = asyncio.Event()
        expected = ""

        async def consume() -> None:
            async for payload in payloads:
                heard.set()
                if payload.startswith("h:"):
                    if payload == expected:
                        echo.set()
                    continue
                self._dispatch(payload)

        consumer: asyncio.Future[Any] = asyncio.create_task(
            consume(), name="pgqueue-listener-consume"
        )
        sender: asyncio.Task[Any] | None = None
        try:
            while True:
                heard.clear()
                done, _ = await asyncio.wait({consumer}, timeout=LISTEN_CHECK_PERIOD)
                if done:
                    consumer.result()  # raises what ended it
                    raise ConnectionError("the LISTEN connection closed")
                if heard.is_set():
                    continue  # it spoke lately: alive
                expected = f"h:{uuid.uuid4().hex}"
                echo.clear()
                if sender is None or sender.done():
                    sender = asyncio.create_task(self._ping(expected))
                sent_at = loop.time()
                echoed: asyncio.Future[Any] = asyncio.ensure_future(echo.wait())
                try:
                    done, _ = await asyncio.wait(
                        {consumer, echoed},
                        timeout=LISTEN_ECHO_TIMEOUT,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    echoed.cancel()
                if consumer in done:
                    consumer.result()
                    raise ConnectionError("the LISTEN connection closed")
                if not echo.is_set():
                    self.listener_restarts += 1
                    raise ConnectionError(
                        f"the LISTEN connection is silent: a ping got no echo in"
                        f" {loop.time() - sent_at:.1f}s; replacing it"
                    )
        finally:
            await cancel_and_wait([consumer] if sender is None else [consumer, sender])

    async def _ping(self, payload: str) -> None:
        """Send a listener ping (another connection's NOTIFY); errors are the echo's concern."""
        try:
            await self.executor.run(operations.ping_listener(self.queries, payload))
        except Exception as exc:  # noqa: BLE001 - a missing echo replaces the listener
            log.debug("listener ping failed: %s", exc)

    async def _schedule(self, periodic: Periodic) -> None:
        """Enqueue each slot of a periodic kind once (across all processes)."""
        spec = self.registry.get(periodic.kind)
        payload = encode_payload(periodic.payload)
        backoff = Backoff(self.max_db_retry_delay)
        while not self.stopping:
            try:
                now = await self.executor.run(operations.database_now(self.queries))
                slot = periodic.schedule.latest_slot(now)
                created = await self.executor.run(
                    operations.push_periodic_task(
                        self.queries,
                        periodic.kind,
                        slot,
                        payload,
                        periodic.external_key(slot),
                        spec.options.max_attempts,
                    )
                )
                if created is not None:
                    log.info(
                        "periodic task %s of %r enqueued for %s",
                        created,
                        periodic.kind,
                        slot.isoformat(),
                    )
                backoff.reset()
                wait = (periodic.schedule.next_slot(slot) - now).total_seconds()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - try again shortly
                wait = backoff.next()
                log.warning(
                    "periodic schedule of %r failed, retrying in %.2fs: %s",
                    periodic.kind,
                    wait,
                    exc,
                )
            await self.sleep_unless_stopping(max(wait, 0.001))

    async def _sweep(self) -> None:
        """Sweep the kinds whose janitor period is up, asking the database first, in one
        statement, which of them hold expired terminal tasks: an idle process costs one
        statement per period, not one transaction per kind."""
        loop = asyncio.get_running_loop()
        next_run = {kind: loop.time() for kind in self.workers}
        while not self.stopping:
            now = loop.time()
            ready = [kind for kind, at in next_run.items() if at <= now]
            ttls: dict[str, float] = {}
            for kind in ready:
                worker = self.workers[kind]
                next_run[kind] = now + worker.options.loop.janitor_period
                try:
                    ttls[kind] = terminal_ttl_of(worker.options)
                except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                    log.warning("retention sweep of %r failed: %s", kind, exc)
            sweepable: list[str] = []
            if ttls:
                try:
                    sweepable = await self.executor.run(
                        operations.find_sweepable_kinds(
                            self.queries,
                            ttls,
                            ttls.values(),
                            (float(self.workers[k].options.loop.throughput_window) for k in ttls),
                        )
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                    log.warning("retention sweep failed: %s", exc)
            for kind in sweepable:
                worker = self.workers[kind]
                period = worker.options.loop.janitor_period
                try:
                    deleted = await self.executor.run(
                        operations.sweep_terminal_tasks(
                            self.queries,
                            kind,
                            ttls[kind],
                            period * 0.9,
                            worker.options.loop.sweep_batch_size,
                            worker.options.loop.throughput_window,
                        )
                    )
                    if deleted:
                        log.info("retention deleted %d terminal task(s) of %r", deleted, kind)
                    if deleted is not None and self.events.listeners:
                        self.events.emit(TerminalTasksSwept(kind, deleted))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                    log.warning("retention sweep of %r failed: %s", kind, exc)
            wait = min(next_run.values(), default=now + 60) - loop.time()
            await self.sleep_unless_stopping(max(wait, 0.01))
