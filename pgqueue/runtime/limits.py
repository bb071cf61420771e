"""Flow control in the claim loop: a limited kind's claims, and how long a held-back loop waits.

The database decides how many attempts may start (``claim_limited_tasks``); this side decides
*when* to ask again: when the next token is due, when a slot of the kind frees up here (its
result was written), or after a short recheck for slots freed in other processes. A loop held
back sends no statement in between, and held-back tasks stay waiting in the table: no attempt
consumed, no worker slot taken.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from pgqueue.delayer import Backoff
from pgqueue.events import ClaimsReleased, Event, ResultsWritten
from pgqueue.options import KindOptions
from pgqueue.runtime.context import RuntimeContext
from pgqueue.store import operations
from pgqueue.store.executor import Row

log = logging.getLogger("pgqueue.worker")

SLOT_RECHECK = 0.25
"""Seconds a loop held back by full slots waits before it looks again, unless a slot of the
kind frees up in this process first (slots freed elsewhere are found this way)."""
MAX_HOLD = 1.0
"""Longest wait for a token (seconds): an operator's change of the limits is obeyed within it."""
MIN_HOLD = 0.01
RESERVE_SECONDS = 0.05
"""A loop out of tokens reserves this many seconds' worth of the rate (at least one token, at
most what it wants): the fleet then takes tokens in small batches spaced evenly (no second
holds much more than the rate), and each loop asks only when its batch is due."""
LIMITER_RETRY = 0.1
"""Seconds before a limiter that allowed nothing is asked again."""
OVERRIDE_CHECK = 0.5
"""A kind without limits of its own reads the operators' overrides at most this often (seconds),
and only while it claims: an idle kind costs nothing, a busy one two statements a second."""


class ClaimLoop(Protocol):
    """What flow control sees of a kind's claim loop (:class:`~.producer.KindWorker`)."""

    kind: str
    options: KindOptions
    runtime: RuntimeContext
    loop: asyncio.AbstractEventLoop
    signal: asyncio.Event
    more_due: bool

    def notify(self) -> None: ...


class FlowControl:
    """A kind's limits in the claim loop (one per :class:`~.producer.KindWorker`).

    While the kind has no limit (in its options or an operator's override) and no limiter, the
    loop claims with the plain statement and only asks :meth:`overridden` now and then.
    """

    def __init__(self, worker: ClaimLoop) -> None:
        self.worker = worker
        self.kind = worker.kind
        self.options = worker.options
        self.limiter = worker.options.limiter
        self.runtime = worker.runtime
        self.loop = worker.loop
        self.limits = operations.code_limits(self.options)
        self.held_until = 0.0
        self.prepaid = 0  # tokens reserved by the last claim, due at held_until
        self.waiting_for_slot = False
        self.throttled: Counter[str] = Counter()  # held-back claims by reason
        self.limiter_backoff = Backoff(self.options.loop.max_db_retry_delay)
        self.next_override_check = 0.0
        # Subscribed to result events only while held back for a slot: listeners make every
        # kind of the process emit events.
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def limited(self) -> bool:
        """True when the kind's claims go through :meth:`claim`."""
        return self.limiter is not None or self.limits.active

    @property
    def claims_ahead(self) -> bool:
        """Whether the loop may claim ahead of idle workers (prefetch). Not under a rate, a
        global concurrency or a limiter: a buffered claim took a token or holds one of few
        slots without running. Group limits alone allow it: a buffered task holds only its
        own group's slot, and with many groups claiming ahead keeps batches large."""
        limits = self.limits
        return not (
            self.limiter is not None
            or limits.rate_limit is not None
            or limits.global_concurrency is not None
        )

    async def overridden(self) -> bool:
        """For a kind without limits: read the operators' overrides (at most every
        :data:`OVERRIDE_CHECK`); True when they now limit the kind."""
        now = self.loop.time()
        if now < self.next_override_check:
            return False
        self.next_override_check = now + OVERRIDE_CHECK
        runtime = self.runtime
        try:
            found = await runtime.executor.run(
                operations.read_kind_limits(runtime.queries, [self.kind], replica_ok=False)
            )
            self.limits = operations.limits_with_overrides(self.options, found.get(self.kind))
        except Exception as exc:  # noqa: BLE001 - the claim that follows reports the database
            log.debug("reading the limit overrides of %r failed: %s", self.kind, exc)
            return False
        return self.limits.active

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_event(self, event: Event) -> None:
        """A result of this kind was written (or claims handed back): a slot may be free."""
        if not self.waiting_for_slot:
            return
        if isinstance(event, ResultsWritten):
            if not any(kind == self.kind for _, kind, _, _ in event.results):
                return
        elif not isinstance(event, ClaimsReleased):
            return
        self.waiting_for_slot = False
        self.held_until = 0.0
        self.worker.notify()

    async def hold(self) -> bool:
        """Wait while the kind is held back; True when it waited (the caller re-evaluates)."""
        wait = self.held_until - self.loop.time()
        if wait <= 0:
            return False
        signal = self.worker.signal
        try:
            async with asyncio.timeout(wait):
                await signal.wait()
        except TimeoutError:
            pass
        signal.clear()
        return True

    def _hold(self, reason: str, seconds: float, for_slot: bool = False) -> None:
        self.throttled[reason] += 1
        self.waiting_for_slot = for_slot
        if for_slot and self._unsubscribe is None:
            self._unsubscribe = self.runtime.events.subscribe(self._on_event)
        self.held_until = self.loop.time() + seconds
        self.worker.more_due = True  # work waits: claim again when the hold ends

    async def claim(self, limit: int, lease: float) -> list[Row]:
        """Claim up to ``limit`` tasks within the kind's limits; hold back when they bind."""
        if self.limiter is not None:
            allowed = await self._ask_limiter(limit)
            if allowed <= 0:
                return []
            limit = allowed
        if not self.limits.active and self.limiter is not None:
            runtime = self.runtime
            return await runtime.executor.run(
                operations.claim_due_tasks(runtime.queries, self.kind, limit, lease)
            )
        rate = self.limits.rate_limit
        reserve = 0
        if rate is not None:
            reserve = max(1, min(limit, rate.capacity, int(rate.per_second * RESERVE_SECONDS)))
        prepaid, self.prepaid = self.prepaid, 0  # spent by this claim, or lost with it
        result = await self.runtime.executor.run(
            operations.claim_limited_tasks(
                self.runtime.queries,
                self.kind,
                limit,
                lease,
                self.options,
                by_group=not self.limits.kind_wide,
                prepaid=prepaid,
                reserve=reserve,
                max_wait=MAX_HOLD,
            )
        )
        self.limits = result.limits
        if result.relock:
            self.worker.more_due = True  # a kind-wide override: claim at once under its lock
            return []
        if not self.limits.active:
            self.next_override_check = self.loop.time() + OVERRIDE_CHECK
        claimed = len(result.rows)
        if result.reserved:
            # Come back when the reserved tokens are due: they are this loop's then.
            self.prepaid = result.reserved
            self._hold("rate", max(MIN_HOLD, result.due_in))
            return result.rows
        if claimed < limit and (
            result.allowed == 0 or result.candidates > claimed or result.blocked
        ):
            if claimed and not self.limits.kind_wide:
                # Groups this claim just filled hid others behind their tasks (a claim looks
                # at the oldest due tasks): claim again at once; each such claim took work.
                self.waiting_for_slot = False
                self.worker.more_due = True
                return result.rows
            self._held_back(result, limit)
        else:
            self.waiting_for_slot = False
        return result.rows

    def _held_back(self, result: operations.LimitedClaim, wanted: int) -> None:
        rate = result.limits.rate_limit
        tokens = result.tokens
        if rate is not None and tokens is not None and tokens < 1:
            # No reservation (the bucket is reserved further ahead than a hold): wait for
            # enough tokens for a worthwhile batch (so a fleet of loops sharing one bucket
            # asks a few times a second, not once per token), jittered apart.
            need = max(1.0, min(float(wanted), float(rate.capacity)))
            seconds = (need - tokens) / rate.per_second
            seconds = min(MAX_HOLD, max(MIN_HOLD, seconds)) * (1 + random.random() * 0.1)
            self._hold("rate", seconds)
        elif result.limits.counts_slots:
            reason = "concurrency" if result.allowed < wanted else "group"
            self._hold(reason, SLOT_RECHECK * (1 + random.random() * 0.2), for_slot=True)
        elif result.limits.group_rate_limit is not None:
            # Groups out of tokens: the next one is due within a token's time.
            seconds = min(MAX_HOLD, 1 / result.limits.group_rate_limit.per_second)
            self._hold("group_rate", max(MIN_HOLD, seconds) * (1 + random.random() * 0.1))

    async def _ask_limiter(self, wanted: int) -> int:
        """How many of ``wanted`` the kind's limiter allows now; 0 (and a back-off) when it
        raises or returns something that is not an int."""
        limiter = self.limiter
        assert limiter is not None
        try:
            answer = limiter.allow(self.kind, wanted)
            if inspect.isawaitable(answer):
                answer = await answer
            if not isinstance(answer, int) or isinstance(answer, bool):
                raise TypeError(f"allow() must return an int, got {answer!r}")
        except Exception as exc:  # noqa: BLE001 - logged, treated as "none now": no loop dies
            delay = self.limiter_backoff.next()
            log.error(
                "limiter of %r failed, asking again in %.2fs: %s: %s",
                self.kind,
                delay,
                type(exc).__name__,
                exc,
            )
            self._hold("limiter_error", delay)
            return 0
        self.limiter_backoff.reset()
        allowed = max(0, min(wanted, answer))
        if allowed == 0:
            self._hold("limiter", LIMITER_RETRY)
        return allowed
