"""One attempt of one task: hooks, stamps, handler, timeouts and the resulting transition.

Order (SPEC §3): ``before`` → stamps wrapping the handler (queue stamps outermost, then kind
stamps, in list order) → handler → ``after`` → ``success`` or ``failure``. Every exception is
caught here and turned into an :class:`Outcome`; nothing escapes to the worker loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pgqueue.bounds import MAX_SECONDS
from pgqueue.envelope import Decision, DecisionKind, Envelope, Invoker, Stamp
from pgqueue.errors import AttemptTimeout, MustCancelTask, Snooze, SnoozeLimit
from pgqueue.options import is_async_callable
from pgqueue.registry import KindSpec
from pgqueue.runtime.threads import Job, SyncThreadPool
from pgqueue.task import Status, encode_result

log = logging.getLogger("pgqueue.execution")

# Success and failure hooks run after the attempt; they get this share of the attempt timeout,
# and never more than the lease margin allows.
RESULT_HOOK_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class Outcome:
    """The state transition an attempt asks for."""

    status: Status
    delay: float = 0.0
    error: str | None = None
    result: str | None = None  # a success's result as JSON text
    snooze: bool = False  # back to waiting for ``delay`` with the attempt refunded


SUCCEEDED = Outcome(Status.SUCCEEDED)
CANCELLED = Outcome(Status.CANCELLED)


def describe_error(error: BaseException) -> str:
    """``Type: message`` for the error ring; never raises, even if ``str(error)`` does."""
    name = type(error).__name__
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - caught and recorded: nothing escapes an attempt
        text = "<unprintable error>"
    return f"{name}: {text}" if text else name


_NO_THREADS: list[Job] = []  # never appended to: see DeadlineGuard.add_thread


class DeadlineGuard:
    """The deadline of one attempt's handler, enforced without a timer per attempt.

    The worker keeps one timer per kind for the oldest running attempt and calls :meth:`fire`
    when an attempt's deadline passes (or the task is cancelled). Firing cancels the asyncio
    task only while it is inside the guarded region, and :meth:`leave` tells whether the
    resulting ``CancelledError`` is the guard's own (as ``asyncio.timeout`` does).
    """

    __slots__ = ("_cancelling", "_fired", "_state", "_task", "threads")

    IDLE, INSIDE, FIRED = 0, 1, 2

    def __init__(self) -> None:
        self._state = self.IDLE
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._fired = 0  # cancellations this guard requested in its region
        # Threads of sync callables that were interrupted (deadline, cancel, abort) while
        # running: Python cannot stop them, so the attempt holds its claim until they return.
        # Empty (and shared) until the first one: most attempts never have any.
        self.threads: list[Job] = _NO_THREADS

    def add_thread(self, job: Job) -> None:
        """Hold the attempt's claim until ``job``'s thread returns."""
        if self.threads is _NO_THREADS:
            self.threads = []
        self.threads.append(job)

    def thread_running(self) -> bool:
        """True while a thread of this attempt that was interrupted has not returned yet."""
        threads = self.threads
        return bool(threads) and any(not job.returned.done() for job in threads)

    def enter(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._fired = 0
        self._state = self.INSIDE

    @property
    def firing(self) -> bool:
        """True while the guard fired and the task has not left the region yet."""
        return self._state == self.FIRED

    def fire(self) -> None:
        """Cancel the task if it is inside the region; again if it fired and is still inside
        (Python 3.11's ``asyncio.wait_for`` can drop a cancellation: CPython gh-86296)."""
        if self._state != self.IDLE and self._task is not None:
            self._state = self.FIRED
            if self._task.cancel():
                self._fired += 1

    def leave(self) -> bool:
        """Leave the region; true when the guard fired and no other cancellation is pending."""
        fired = self._state == self.FIRED
        self._state = self.IDLE
        task, self._task = self._task, None
        if fired and task is not None:
            remaining = task.cancelling()
            for _ in range(self._fired):
                remaining = task.uncancel()
            return remaining <= self._cancelling
        return False


running_guard: contextvars.ContextVar[DeadlineGuard | None] = contextvars.ContextVar(
    "pgqueue_running_guard", default=None
)
"""The guard of the attempt the current asyncio task runs (set by the worker runtime)."""


async def in_thread(threads: SyncThreadPool, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a sync callable on the pool; if interrupted while its thread runs it, tell the
    attempt's guard, so the attempt keeps its claim and slot until the thread returns."""
    future, job = threads.submit_job(asyncio.get_running_loop(), fn, *args)
    try:
        return await future
    except asyncio.CancelledError:
        if not job.cancel():  # a thread took it: it runs on, whatever we do
            guard = running_guard.get()
            if guard is not None:
                guard.add_thread(job)
        raise


class AttemptRunner:
    """Runs attempts of one kind; built once per kind when the queue starts."""

    def __init__(
        self, spec: KindSpec, queue_stamps: Sequence[Stamp], threads: SyncThreadPool
    ) -> None:
        assert spec.handler is not None
        self.spec = spec
        self.options = spec.options
        self.threads = threads
        self.timeout = spec.options.attempt_timeout_seconds
        self.result_hook_timeout = min(
            self.timeout * RESULT_HOOK_SHARE + 0.5, spec.options.loop.lease_margin / 2
        )
        invoker: Invoker = self._adapt(spec.handler)
        for stamp in reversed([*queue_stamps, *spec.options.stamps]):
            invoker = stamp(invoker)
        self.invoker = invoker

    def _adapt(self, fn: Callable[..., Any]) -> Invoker:
        """Make any handler an async callable: sync ones run on the daemon thread pool."""
        if is_async_callable(fn):
            return fn
        threads = self.threads

        async def run_in_thread(envelope: Envelope) -> Any:
            return await in_thread(threads, fn, envelope)

        return run_in_thread

    async def _call_hook(self, hook: Callable[..., Any], budget: float, *args: Any) -> Any:
        try:
            async with asyncio.timeout(max(budget, 0.0)) as handle:
                if is_async_callable(hook):
                    return await hook(*args)
                return await in_thread(self.threads, hook, *args)
        except TimeoutError:
            if not handle.expired():
                raise
            name = getattr(hook, "__name__", type(hook).__name__)
            raise AttemptTimeout(f"hook {name} timed out after {max(budget, 0.0):.1f}s") from None

    async def run(self, envelope: Envelope, guard: DeadlineGuard) -> Outcome:
        """Run one attempt and return the transition to record.

        The caller fires ``guard`` when the attempt's deadline passes or the task is cancelled
        while the handler runs; the handler is then interrupted.
        """
        loop = asyncio.get_running_loop()
        options = self.options
        error: BaseException | None = None
        cancelled = False
        result: str | None = None
        snooze: Snooze | None = None
        if options.before is not None:
            try:
                await self._call_hook(
                    options.before, envelope.monotonic_deadline - loop.time(), envelope
                )
            except MustCancelTask:
                cancelled = True
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - caught and recorded: nothing escapes an attempt
                error = exc
        if envelope.cancel_requested:
            cancelled = True
        if error is None and not cancelled:
            if loop.time() >= envelope.monotonic_deadline:
                error = AttemptTimeout(f"attempt timed out after {self.timeout:g}s")
            else:
                fired = False
                guard.enter()
                try:
                    try:
                        value = await self.invoker(envelope)
                    finally:
                        fired = guard.leave()
                    if fired:  # it swallowed the cancellation and returned late
                        raise asyncio.CancelledError
                    if value is not None:
                        result = encode_result(value, options.max_result_bytes)
                except asyncio.CancelledError:
                    if not fired:
                        raise
                    if envelope.cancel_requested:
                        cancelled = True
                    else:
                        error = AttemptTimeout(f"attempt timed out after {self.timeout:g}s")
                except MustCancelTask:
                    cancelled = True
                except Snooze as exc:
                    if envelope.snoozes < options.max_snoozes:
                        snooze = exc
                    else:
                        error = SnoozeLimit(
                            f"the task snoozed {envelope.snoozes} times, the kind's max_snoozes;"
                            f" this snooze ({exc.seconds:g}s) counts as a failure"
                        )
                except BaseException as exc:  # noqa: BLE001 - caught and recorded: nothing escapes an attempt
                    error = exc
        if error is None and options.after is not None:
            try:
                await self._call_hook(
                    options.after, envelope.monotonic_deadline - loop.time(), envelope
                )
            except MustCancelTask:
                cancelled = True
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - caught and recorded: nothing escapes an attempt
                log.warning(
                    "after hook failed: %s", describe_error(exc), extra=_task_extra(envelope)
                )
        if cancelled:
            return CANCELLED
        if snooze is not None:
            return Outcome(Status.MUST_RETRY, delay=min(snooze.seconds, MAX_SECONDS), snooze=True)
        if error is None:
            if options.success is not None:
                try:
                    await self._call_hook(options.success, self.result_hook_timeout, envelope)
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # noqa: BLE001 - caught and recorded: nothing escapes an attempt
                    log.warning(
                        "success hook failed: %s", describe_error(exc), extra=_task_extra(envelope)
                    )
            return SUCCEEDED if result is None else Outcome(Status.SUCCEEDED, result=result)
        return await self._failed(envelope, error)

    async def _failed(self, envelope: Envelope, error: BaseException) -> Outcome:
        message = describe_error(error)
        decision = Decision.default()
        if self.options.failure is not None:
            try:
                chosen = await self._call_hook(
                    self.options.failure, self.result_hook_timeout, envelope, error
                )
                if chosen is not None:
                    if not isinstance(chosen, Decision):
                        raise TypeError(f"failure hook returned {chosen!r}, not a Decision")
                    decision = chosen
            except MustCancelTask:
                decision = Decision.cancel()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - caught and recorded: nothing escapes an attempt
                log.warning(
                    "failure hook failed, using the default decision: %s",
                    describe_error(exc),
                    extra=_task_extra(envelope),
                )
        log.info(
            "task %s (%s) attempt %d failed: %s",
            envelope.id,
            envelope.kind,
            envelope.attempt,
            message,
            extra=_task_extra(envelope),
        )
        return decide(decision, envelope, message, self.options.delayer.delay)


def decide(
    decision: Decision, envelope: Envelope, message: str, delayer: Callable[[int], float]
) -> Outcome:
    """Turn a failure decision into a transition. Attempts are a hard cap: a retry decision on
    the last attempt ends ``no_attempts_left`` (``retry_tasks`` adds attempts)."""
    if decision.kind is DecisionKind.CANCEL:
        return Outcome(Status.CANCELLED, error=message)
    if decision.kind is DecisionKind.DROP or envelope.attempts_left <= 0:
        return Outcome(Status.NO_ATTEMPTS_LEFT, error=message)
    if decision.kind is DecisionKind.RETRY_AFTER:
        return Outcome(Status.MUST_RETRY, delay=min(decision.delay, MAX_SECONDS), error=message)
    try:
        delay = float(delayer(envelope.attempt))
        if delay != delay:
            raise ValueError("the delayer returned NaN")
        # A delay PostgreSQL cannot add to now() would fail the whole result batch, forever.
        delay = min(max(0.0, delay), MAX_SECONDS)
    except Exception as exc:  # noqa: BLE001 - caught and recorded: nothing escapes an attempt
        log.warning("delayer failed, retrying in 1s: %s", describe_error(exc))
        delay = 1.0
    return Outcome(Status.MUST_RETRY, delay=delay, error=message)


def _task_extra(envelope: Envelope) -> dict[str, Any]:
    return {"task_id": envelope.id, "task_kind": envelope.kind, "attempt": envelope.attempt}
