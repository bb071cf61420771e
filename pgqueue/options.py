"""Per-kind and per-loop options; values documented as dynamic may be zero-arg callables."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union

from pgqueue.bounds import MAX_ATTEMPTS, MAX_INT, MAX_SECONDS, MAX_WORKER_COUNT
from pgqueue.delayer import Delayer, ExpBackoffDelayer
from pgqueue.errors import InvalidOptions
from pgqueue.limits import Limiter, RateLimit

if TYPE_CHECKING:
    from pgqueue.envelope import Decision, Envelope, Stamp

T = TypeVar("T")
Seconds = float | int | timedelta
Provider = Union[T, Callable[[], T]]  # noqa: UP007 - a generic alias needs Union

Hook = Callable[["Envelope"], Awaitable[None] | None]
FailureHook = Callable[
    ["Envelope", BaseException], Union["Decision", Awaitable[Union["Decision", None]], None]
]

SHORT_ATTEMPT = 0.05  # seconds: below this on average, claiming ahead pays off
PREFETCH_WINDOW = 0.025  # seconds of work (at the average attempt length) claimed ahead
DEFAULT_MAX_RESULT_BYTES = 1_048_576  # 1 MiB, like payloads
MAX_RESULT_BYTES = 64 * 1_048_576  # the ceiling of max_result_bytes (jsonb holds ~255 MB)


def resolve(value: Provider[T]) -> T:
    """Read a provider: call it when it is callable, else return it as is."""
    if callable(value):
        return value()  # type: ignore[no-any-return,unused-ignore]
    return value


def to_seconds(value: Seconds, name: str, *, allow_zero: bool = True) -> float:
    """Convert a number of seconds or a timedelta to float seconds, rejecting bad values."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidOptions(f"{name} must be seconds (int, float or timedelta), got {value!r}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise InvalidOptions(f"{name} must be finite, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise InvalidOptions(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    if seconds > MAX_SECONDS:
        raise InvalidOptions(f"{name} must be at most {MAX_SECONDS:.0f}s (10 years), got {value!r}")
    return seconds


def check_int(
    name: str, value: object, *, minimum: int, optional: bool = False, maximum: int = MAX_INT
) -> None:
    """Raise :class:`InvalidOptions` unless ``value`` is an int between ``minimum`` and
    ``maximum`` (or ``None`` when ``optional``)."""
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        allowed = f"{'None or ' if optional else ''}an int from {minimum} to {maximum}"
        raise InvalidOptions(f"{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class LoopOptions:
    """Internal knobs of a kind's worker loop; the defaults suit most workloads."""

    poll_period: float = 1.0
    """Longest time between two polls for due work when no notification arrives (seconds).
    One poller per process asks for all its kinds at once, at the smallest ``poll_period`` of
    its kinds, and earlier when a task it knows of falls due. A push delayed by less than the
    kind's ``poll_period`` notifies its due time, so a longer period costs no lateness."""
    janitor_period: float = 30.0
    """How often the retention sweeper runs for the kind (seconds, one process at a time)."""
    claim_batch_size: int = 1000
    """Most rows one claim statement takes (also bounded by idle workers)."""
    lease_margin: float = 10.0
    """The lease of a claim (seconds): how long a claimed task stays taken without a heartbeat.
    While this process holds a claim (buffered, running, result not yet written) a heartbeat
    renews its lease to this many seconds every quarter of it, so an attempt may run as long as
    its ``attempt_timeout`` allows, and a crashed process's tasks come back within about this
    long. Keep it well above the database's worst round trip."""
    sweep_batch_size: int = 1000
    """Rows deleted per retention statement."""
    max_db_retry_delay: float = 5.0
    """Cap of the backoff between retries after a database error (seconds)."""
    throughput_window: float = 7 * 86_400.0
    """How long the per-minute throughput rollup of the kind is kept (seconds); the retention
    sweeper prunes older rows."""
    max_overrun: float = 600.0
    """Hard cap (seconds) on how long past its deadline a sync handler still running on its
    thread keeps its task claimed. Python cannot interrupt a thread: the attempt is decided as
    timed out at the deadline, but the task stays claimed and its worker slot taken until the
    thread returns, so no retry overlaps it. Past this cap the lease is no longer renewed (an
    error is logged) and the task may be retried while the thread still runs."""
    prefetch: int | None = None
    """Tasks claimed ahead of free workers, so the next batch is ready when one finishes.
    ``None`` (the default) adapts: while the kind's attempts are short (under 50 ms on
    average), about 25 ms of work at the average attempt length, at least twice
    ``worker_count`` and at most ``claim_batch_size`` (or twice ``worker_count`` if that is
    more); none while they are long, so long tasks stay in the table for other processes' idle
    workers. 0 claims only for idle workers. A buffered task whose lease ran short before a
    worker freed up is handed back, not run."""

    def prefetch_for(self, worker_count: int, average_attempt: float | None) -> int:
        if self.prefetch is not None:
            return self.prefetch
        if average_attempt is None or average_attempt >= SHORT_ATTEMPT:
            return 0
        floor = 2 * worker_count
        window = int(worker_count * PREFETCH_WINDOW / max(average_attempt, 1e-6))
        return max(floor, min(window, self.claim_batch_size))

    def validate(self) -> LoopOptions:
        for name in (
            "poll_period",
            "janitor_period",
            "lease_margin",
            "max_db_retry_delay",
            "throughput_window",
            "max_overrun",
        ):
            to_seconds(getattr(self, name), f"LoopOptions.{name}", allow_zero=False)
        check_int("LoopOptions.claim_batch_size", self.claim_batch_size, minimum=1)
        check_int("LoopOptions.sweep_batch_size", self.sweep_batch_size, minimum=1)
        check_int("LoopOptions.prefetch", self.prefetch, minimum=0, optional=True)
        return self


@dataclass(frozen=True)
class KindOptions:
    """How tasks of one kind are run: concurrency, attempts, timeouts, retries and retention.

    ``worker_count`` and ``terminal_tasks_ttl`` are dynamic: pass a zero-arg callable and it is
    re-read while the queue runs (the worker pool resizes live).

    - ``attempt_timeout`` (required): seconds (or a ``timedelta``) one attempt may run.
    - ``worker_count``: concurrent attempts of this kind in this process.
    - ``max_attempts``: attempts before a failing task ends ``no_attempts_left``.
    - ``max_task_error_messages``: error messages kept on the row (the newest).
    - ``delayer``: the wait before a retry (:class:`ExpBackoffDelayer` by default).
    - ``terminal_tasks_ttl``: seconds finished tasks are kept; 0 deletes them at once.
    - ``loop``: the claim loop's :class:`LoopOptions`.
    - ``max_pending``: cap on pending tasks; a push over it raises ``CapacityExceeded``.
    - ``before``, ``after``, ``success`` (take the envelope) and ``failure`` (takes the
      envelope and the error, may return a :class:`Decision`): hooks around each attempt.
    - ``stamps``: middleware around this kind's handler (after the queue's stamps).
    - ``priority``: the priority of tasks pushed without one (-100 to 100, higher first).
    - ``rate_limit``: a :class:`RateLimit` on attempt starts, fleet-wide.
    - ``global_concurrency``: at most this many attempts running at once, fleet-wide.
    - ``group_concurrency``, ``group_rate_limit``: the same per ``Task.group``.
    - ``limiter``: a :class:`~pgqueue.limits.Limiter` of your own, asked before each claim.
    - ``max_result_bytes``: the largest result (the handler's return value as JSON) stored
      with a success; a larger one, or one that is not JSON, fails the attempt.
    - ``max_snoozes``: how many times a task may ``raise Snooze(...)``; the next snooze is a
      failure (it consumes the attempt, and the failure hook and delayer decide).
    - ``key_scope``: how long an ``external_key`` stays taken: ``"until_deleted"`` (while the
      task's row exists, retention included) or ``"while_active"`` (while its task is waiting or
      running: once it ended, the key can be pushed again).
    """

    attempt_timeout: Seconds
    worker_count: Provider[int] = 10
    max_attempts: int = 10
    max_task_error_messages: int = 3
    delayer: Delayer = field(default_factory=ExpBackoffDelayer)
    terminal_tasks_ttl: Provider[Seconds] = 86_400.0
    loop: LoopOptions = field(default_factory=LoopOptions)
    max_pending: int | None = None
    before: Hook | None = None
    after: Hook | None = None
    failure: FailureHook | None = None
    success: Hook | None = None
    stamps: Sequence[Stamp] = ()
    priority: int = 0
    rate_limit: RateLimit | None = None
    global_concurrency: int | None = None
    group_concurrency: int | None = None
    group_rate_limit: RateLimit | None = None
    limiter: Limiter | None = None
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    max_snoozes: int = 100
    key_scope: Literal["until_deleted", "while_active"] = "until_deleted"

    def validate(self) -> KindOptions:
        """Check every static option and the current value of every provider."""
        to_seconds(self.attempt_timeout, "attempt_timeout", allow_zero=False)
        worker_count_of(self)
        terminal_ttl_of(self)
        check_int("max_attempts", self.max_attempts, minimum=1, maximum=MAX_ATTEMPTS)
        check_int("max_task_error_messages", self.max_task_error_messages, minimum=0)
        check_int("max_pending", self.max_pending, minimum=1, optional=True)
        check_int("max_result_bytes", self.max_result_bytes, minimum=0, maximum=MAX_RESULT_BYTES)
        check_int("max_snoozes", self.max_snoozes, minimum=0)
        if self.key_scope not in ("until_deleted", "while_active"):
            raise InvalidOptions(
                f'key_scope must be "until_deleted" or "while_active", got {self.key_scope!r}'
            )
        if not isinstance(self.delayer, Delayer):
            raise InvalidOptions("delayer must have a delay(attempt) -> seconds method")
        for name in ("before", "after", "failure", "success"):
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise InvalidOptions(f"{name} hook must be callable, got {hook!r}")
        for stamp in self.stamps:
            if not callable(stamp):
                raise InvalidOptions(f"stamps must be callables, got {stamp!r}")
        check_int("priority", self.priority, minimum=-100, maximum=100)
        check_int("global_concurrency", self.global_concurrency, minimum=1, optional=True)
        check_int("group_concurrency", self.group_concurrency, minimum=1, optional=True)
        for name in ("rate_limit", "group_rate_limit"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, RateLimit):
                raise InvalidOptions(f"{name} must be a RateLimit or None, got {value!r}")
        if self.limiter is not None and not callable(getattr(self.limiter, "allow", None)):
            raise InvalidOptions(
                f"limiter must have an allow(kind, wanted) method, got {self.limiter!r}"
            )
        if not isinstance(self.loop, LoopOptions):
            raise InvalidOptions("loop must be a LoopOptions")
        self.loop.validate()
        return self

    @property
    def limited(self) -> bool:
        """True when a fleet-wide limit or a limiter applies to the kind's claims."""
        return (
            self.rate_limit is not None
            or self.global_concurrency is not None
            or self.group_concurrency is not None
            or self.group_rate_limit is not None
            or self.limiter is not None
        )

    @property
    def attempt_timeout_seconds(self) -> float:
        return to_seconds(self.attempt_timeout, "attempt_timeout", allow_zero=False)

    @property
    def lease_seconds(self) -> float:
        """How long a claim holds a row between heartbeats (``loop.lease_margin``)."""
        return float(self.loop.lease_margin)


def worker_count_of(options: KindOptions) -> int:
    """Current worker count of a kind (re-read from its provider)."""
    value = resolve(options.worker_count)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_WORKER_COUNT:
        raise InvalidOptions(
            f"worker_count must be an int between 0 and {MAX_WORKER_COUNT}, got {value!r}"
        )
    return value


def terminal_ttl_of(options: KindOptions) -> float:
    """Current retention of terminal tasks of a kind in seconds (re-read from its provider)."""
    value: Any = resolve(options.terminal_tasks_ttl)
    return to_seconds(value, "terminal_tasks_ttl")


def is_async_callable(fn: Any) -> bool:
    """True for ``async def`` functions and objects whose ``__call__`` is one."""
    while hasattr(fn, "func") and not inspect.isfunction(fn):  # functools.partial
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )
