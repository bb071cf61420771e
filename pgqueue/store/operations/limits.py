"""Flow control's statements: the limited claim, and the limits in force for a kind.

A limited kind's claim is one transaction of two statements: ``lock_kind_limits`` locks the
kind's row in ``kind_limits`` (and reads the operator's overrides), then
``claim_limited_tasks`` counts the running attempts and refills the token bucket with a fresh
snapshot, so it sees every claim committed before it, and claims within what is left. The
count and the claim are in one statement; the lock makes them exact across processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgqueue.limits import RateLimit
from pgqueue.options import KindOptions
from pgqueue.store.executor import Operation, Row, Statement, Steps
from pgqueue.store.queries import Queries

SCAN_FACTOR = 4
"""A group-limited claim of N tasks looks at up to this many times N (and at least
:data:`MIN_SCAN`) due tasks for ones whose group has a free slot."""
MIN_SCAN = 100


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits in force for a kind: its ``KindOptions``, overridden by an operator."""

    rate_limit: RateLimit | None = None
    global_concurrency: int | None = None
    group_concurrency: int | None = None

    @property
    def counts_slots(self) -> bool:
        return self.global_concurrency is not None or self.group_concurrency is not None

    @property
    def active(self) -> bool:
        return self.rate_limit is not None or self.counts_slots


def code_limits(options: KindOptions) -> Limits:
    """The limits a kind's ``KindOptions`` set."""
    return Limits(options.rate_limit, options.global_concurrency, options.group_concurrency)


def limits_with_overrides(options: KindOptions, row: Row | None) -> Limits:
    """The code's limits with the overrides of a ``lock_kind_limits`` row applied."""
    limits = code_limits(options)
    if row is None:
        return limits
    rate, per, burst, global_concurrency, group_concurrency = row[:5]
    rate_limit = limits.rate_limit
    if rate is not None:
        rate_limit = RateLimit(rate, per=per or 1.0, burst=burst)
    return Limits(
        rate_limit,
        limits.global_concurrency if global_concurrency is None else global_concurrency,
        limits.group_concurrency if group_concurrency is None else group_concurrency,
    )


@dataclass(frozen=True, slots=True)
class LimitedClaim:
    """What a limited claim took and why it took no more.

    ``rows`` are shaped like ``claim_due_tasks``'s; ``allowed`` is how many the limits let
    start; ``candidates`` how many due tasks it looked at (0 when nothing was allowed: it did
    not look); ``tokens`` the tokens left in the bucket (None: no rate limit).
    """

    rows: list[Row]
    allowed: int
    candidates: int
    tokens: float | None
    limits: Limits


def claim_limited_tasks(
    queries: Queries, kind: str, limit: int, lease: float, options: KindOptions
) -> Operation[LimitedClaim]:
    """Claim up to ``limit`` due tasks of ``kind`` within its limits (code and overrides)."""

    def steps() -> Steps[LimitedClaim]:
        locked = yield Statement(queries["lock_kind_limits"], {"kind": kind})
        if not locked:
            yield Statement(queries["add_kind_limits_row"], {"kind": kind})
            locked = yield Statement(queries["lock_kind_limits"], {"kind": kind})
        limits = limits_with_overrides(options, locked[0] if locked else None)
        rate = limits.rate_limit
        rows = yield Statement(
            queries["claim_limited_tasks"],
            {
                "kind": kind,
                "limit": limit,
                "lease": lease,
                "rate": None if rate is None else rate.per_second,
                "burst": None if rate is None else float(rate.capacity),
                "global_concurrency": limits.global_concurrency,
                "group_concurrency": limits.group_concurrency,
                "counts_slots": limits.counts_slots,
                "scan": max(MIN_SCAN, SCAN_FACTOR * limit),
            },
        )
        first = rows[0]
        claimed = [row[:10] for row in rows if row[0] is not None]
        tokens = None if first[10] is None else float(first[10])
        return LimitedClaim(claimed, int(first[11]), int(first[12]), tokens, limits)

    return Operation(steps(), transactional=True)
