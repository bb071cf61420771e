"""The attempts of one kind: starting a claimed task, the kind's deadline timer, running the
attempt, handing its outcome to the result writer, and interrupting it (deadline, cancel, lost
claim).

:class:`AttemptLifecycle` is the half of :class:`~.producer.KindWorker` that runs attempts; the
claim loop in :mod:`.producer` decides when to claim and how many. They share one state (the
running attempts, the buffer of claimed tasks, the worker count), so the lifecycle is a base
class of the worker rather than an object of its own: the hot path reads its attributes
directly.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from json import JSONDecoder
from json import loads as json_loads
from typing import Any

from pgqueue.aio import RECANCEL_PERIOD
from pgqueue.envelope import Envelope
from pgqueue.events import AttemptFinished
from pgqueue.logcontext import TaskContext, current_task
from pgqueue.options import KindOptions
from pgqueue.runtime.completer import Result, ResultWriter
from pgqueue.runtime.context import RuntimeContext
from pgqueue.runtime.execution import AttemptRunner, DeadlineGuard, Outcome, running_guard
from pgqueue.task import Status

log = logging.getLogger("pgqueue.worker")

_decode_document = JSONDecoder().raw_decode


def decode_payload(text: str) -> Any:
    """A claimed payload (``jsonb`` printed by the server: one document, no whitespace around
    it) decoded without :func:`json.loads`'s checks for whitespace; anything else is decoded
    (or rejected) by ``json.loads``."""
    try:
        value, end = _decode_document(text)
    except ValueError:
        return json_loads(text)
    return value if end == len(text) else json_loads(text)


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


class AttemptLifecycle:
    """Runs the attempts of one kind; :class:`~.producer.KindWorker` is its one subclass."""

    kind: str
    options: KindOptions
    runtime: RuntimeContext
    runner: AttemptRunner
    writer: ResultWriter
    loop: asyncio.AbstractEventLoop
    signal: asyncio.Event
    inflight: dict[int, Attempt]
    buffer: deque[tuple[tuple[Any, ...], float]]
    size: int
    average_attempt: float | None
    timeout: float
    keep_messages: int
    delete_finished: bool
    paused: bool
    _watchdog: asyncio.TimerHandle | None

    def _start_buffered(self, size: int) -> None:
        raise NotImplementedError  # the claim loop's: start buffered claims up to ``size``

    def _start(self, row: tuple[Any, ...], now: float, claimed_locally_at: float) -> None:
        (task_id, payload, key, elapsed, left, max_attempts, token, messages, claimed_at,
         lease_lost, snoozes, workflow, trace_context) = row  # fmt: skip
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
            None if payload is None else decode_payload(payload),
            key,
            elapsed,
            left,
            max_attempts,
            claimed_at,
            waited + timeout,
            now + timeout,
            [] if messages is None else messages,
            snoozes,
            None if workflow is None else decode_payload(workflow),
            trace_context,
        )
        attempt = Attempt(envelope, token)
        self.inflight[task_id] = attempt
        loop = self.loop
        name = f"pgqueue-task-{task_id}"
        # Python 3.12's eager tasks run the attempt at once, up to its first wait, in this turn
        # of the loop (the claim loop's, or a finished attempt's): a handler that does not wait
        # ends without a scheduled step or a wake-up. ``asyncio.current_task()`` is the
        # attempt's own task from its first line, as in any task. Python 3.11 has no such task.
        if sys.version_info >= (3, 12) and loop.get_task_factory() is None:
            task = asyncio.Task(self._execute(attempt), loop=loop, name=name, eager_start=True)
            if task.done():
                return  # it ran to its end at once: its result is with the writer
        else:  # a task factory of the application's is used as it is
            task = loop.create_task(self._execute(attempt), name=name)
        attempt.task = task

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
        self.writer.submit(
            Result(
                envelope.id,
                attempt.token,
                self.kind,
                outcome,
                self.keep_messages,
                # A workflow node's row stays until the sweeper's turn: its children read it.
                self.delete_finished and outcome.status.is_terminal and not envelope.workflow_id,
                envelope.attempt,
                envelope.workflow_id is not None,
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
            extra=log_extra(attempt),
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
            extra=log_extra(attempt),
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


def log_extra(attempt: Attempt) -> dict[str, Any]:
    envelope = attempt.envelope
    return {"task_id": envelope.id, "task_kind": envelope.kind, "attempt": envelope.attempt}
