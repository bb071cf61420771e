"""Flow control's statements: the limited claim, and the limits in force for a kind.

A limited kind's claim is one transaction. Under a kind-wide limit (a rate or a global
concurrency) ``lock_kind_limits`` locks the kind's row in ``kind_limits`` (and reads the
operator's overrides), then ``claim_limited_tasks`` counts the running attempts and refills the
token bucket with a fresh snapshot, so it sees every claim committed before it, and claims
within what is left. The count and the claim are in one statement; the lock makes them exact
across processes.

A kind limited by groups alone needs no kind-wide order: its claims share the row's lock
(``lock_kind_limits_shared``; a kind-wide claim or an operator's change waits for them), each
locks the groups it will claim from (``lock_claim_groups``, advisory locks that skip groups
another claim holds), and ``claim_limited_tasks`` counts and claims for those groups only. So
claims of one kind run at once in every process, and each group's count stays exact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgqueue.errors import InvalidOptions
from pgqueue.limits import LimitOverrides, RateLimit
from pgqueue.options import KindOptions, check_int
from pgqueue.store.executor import Operation, Row, Statement, Steps
from pgqueue.store.operations.checks import unknown_kind
from pgqueue.store.operations.claims import CLAIMED_COLUMNS
from pgqueue.store.queries import Queries
from pgqueue.task import validate_kind_name

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
    group_rate_limit: RateLimit | None = None

    @property
    def counts_slots(self) -> bool:
        return self.global_concurrency is not None or self.group_concurrency is not None

    @property
    def active(self) -> bool:
        return self.rate_limit is not None or self.counts_slots or self.group_rate_limit is not None

    @property
    def kind_wide(self) -> bool:
        """Whether claims must take the kind's lock one at a time (a rate or a global
        concurrency: one count for the whole kind); False when only groups are limited."""
        return self.rate_limit is not None or self.global_concurrency is not None

    @property
    def by_group(self) -> bool:
        return self.group_concurrency is not None or self.group_rate_limit is not None


def code_limits(options: KindOptions) -> Limits:
    """The limits a kind's ``KindOptions`` set."""
    return Limits(
        options.rate_limit,
        options.global_concurrency,
        options.group_concurrency,
        options.group_rate_limit,
    )


def limits_with_overrides(options: KindOptions, overrides: LimitOverrides | None) -> Limits:
    """The code's limits with an operator's overrides applied (they win until cleared)."""
    limits = code_limits(options)
    if overrides is None:
        return limits
    return Limits(
        limits.rate_limit if overrides.rate_limit is None else overrides.rate_limit,
        limits.global_concurrency
        if overrides.global_concurrency is None
        else overrides.global_concurrency,
        limits.group_concurrency
        if overrides.group_concurrency is None
        else overrides.group_concurrency,
        limits.group_rate_limit
        if overrides.group_rate_limit is None
        else overrides.group_rate_limit,
    )


@dataclass(frozen=True, slots=True)
class LimitedClaim:
    """What a limited claim took and why it took no more.

    ``rows`` are shaped like ``claim_due_tasks``'s; ``allowed`` is how many the limits let
    start; ``candidates`` how many due tasks it looked at (0 when nothing was allowed: it did
    not look); ``tokens`` the tokens left in the bucket (None: no rate limit); ``blocked``
    whether due tasks wait on their group (its slots, its tokens, or another process claiming
    from it); ``relock`` that a claim by group found a kind-wide limit (an operator's
    override) and took nothing: claim again under the kind's lock; ``reserved`` the tokens
    the claim reserved for this loop, due in ``due_in`` seconds (pass them as ``prepaid``
    then).
    """

    rows: list[Row]
    allowed: int
    candidates: int
    tokens: float | None
    limits: Limits
    blocked: bool = False
    relock: bool = False
    reserved: int = 0
    due_in: float = 0.0


def claim_limited_tasks(
    queries: Queries,
    kind: str,
    limit: int,
    lease: float,
    options: KindOptions,
    *,
    by_group: bool | None = None,
    prepaid: int = 0,
    reserve: int = 0,
    max_wait: float = 1.0,
) -> Operation[LimitedClaim]:
    """Claim up to ``limit`` due tasks of ``kind`` within its limits (code and overrides).

    ``by_group``: claim under the kind's shared lock and per-group locks, which is right while
    the kind is limited by groups alone (as the caller last saw its limits; None: as its
    options say). A claim by group that finds a kind-wide override takes nothing and says
    ``relock``.

    ``prepaid``: tokens this loop reserved in an earlier claim, due now; ``reserve``: how many
    future tokens to reserve when this claim runs out while tasks wait, if they fall due within
    ``max_wait`` seconds."""
    if by_group is None:
        by_group = not code_limits(options).kind_wide
    lock = queries["lock_kind_limits_shared" if by_group else "lock_kind_limits"]
    scan = max(MIN_SCAN, SCAN_FACTOR * limit)

    def steps() -> Steps[LimitedClaim]:
        locked = yield Statement(lock, {"kind": kind})
        if not locked:
            yield Statement(queries["add_kind_limits_row"], {"kind": kind})
            locked = yield Statement(lock, {"kind": kind})
        limits = limits_with_overrides(options, _overrides(locked[0]) if locked else None)
        groups: list[str] | None = None
        if by_group:
            if limits.kind_wide:
                return LimitedClaim([], 0, 0, None, limits, relock=True)
            if limits.by_group:
                found = yield Statement(
                    queries["lock_claim_groups"],
                    {
                        "kind": kind,
                        "group_concurrency": limits.group_concurrency,
                        "scan": scan,
                        "groups": limit,
                        "lock_prefix": f"{queries.schema}:{kind}:group:",
                    },
                )
                groups = list(found[0][0])
        rate = limits.rate_limit
        group_rate = limits.group_rate_limit
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
                "group_rate": None if group_rate is None else group_rate.per_second,
                "group_burst": None if group_rate is None else float(group_rate.capacity),
                "scan": scan,
                "groups": groups,
                "prepaid": prepaid,
                "reserve": reserve,
                "max_wait": max_wait,
            },
        )
        first = rows[0]
        # The claimed rows have claim_due_tasks's columns (up to the trace context); then
        # what the limits said, the same in every row.
        claimed = [row[:CLAIMED_COLUMNS] for row in rows if row[0] is not None]
        tokens = None if first[13] is None else float(first[13])
        reserved = int(first[17] or 0)
        due_in = 0.0
        if reserved and rate is not None:
            due_in = max(0.0, (reserved - float(first[18])) / rate.per_second)
        return LimitedClaim(
            claimed,
            int(first[14]),
            int(first[15]),
            tokens,
            limits,
            blocked=bool(first[16]),
            reserved=reserved,
            due_in=due_in,
        )

    return Operation(steps(), transactional=True)


class _Unchanged:
    """The default of :meth:`set_limits` arguments: keep the current override."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()


def _overrides(row: Row) -> LimitOverrides:
    rate, per, burst, global_concurrency, group_concurrency, at = row[:6]
    group_rate, group_per, group_burst = row[6:9]
    return LimitOverrides(
        _rate(rate, per, burst),
        global_concurrency,
        group_concurrency,
        at,
        group_rate_limit=_rate(group_rate, group_per, group_burst),
    )


def _rate(rate: float | None, per: float | None, burst: int | None) -> RateLimit | None:
    return None if rate is None else RateLimit(_number(rate), per=per or 1.0, burst=burst)


def _number(value: float) -> float:
    return int(value) if float(value).is_integer() else float(value)


def set_kind_limits(
    queries: Queries,
    kind: str,
    registered: bool,
    *,
    rate_limit: Any = UNCHANGED,
    global_concurrency: Any = UNCHANGED,
    group_concurrency: Any = UNCHANGED,
    group_rate_limit: Any = UNCHANGED,
    actor: str | None = None,
) -> Operation[LimitOverrides]:
    """Override ``kind``'s limits fleet-wide (``None`` clears an override, an argument left
    out keeps it); validated before any SQL. Unknown kinds raise ``UnknownKind``."""
    validate_kind_name(kind)
    for name, value in (("rate_limit", rate_limit), ("group_rate_limit", group_rate_limit)):
        if value is not UNCHANGED and not isinstance(value, RateLimit | None):
            raise InvalidOptions(f"{name} must be a RateLimit or None, got {value!r}")
    for name, value in (
        ("global_concurrency", global_concurrency),
        ("group_concurrency", group_concurrency),
    ):
        if value is not UNCHANGED:
            check_int(name, value, minimum=1, optional=True)
    if actor is not None and (not isinstance(actor, str) or len(actor) > 200):
        raise InvalidOptions(f"actor must be a string of at most 200 characters, got {actor!r}")
    change: dict[str, Any] = {}
    rate = None if rate_limit is UNCHANGED else rate_limit
    if rate_limit is not UNCHANGED:
        change["rate_limit"] = (
            None if rate is None else {"n": rate.n, "per": rate.per, "burst": rate.capacity}
        )
    if global_concurrency is not UNCHANGED:
        change["global_concurrency"] = global_concurrency
    if group_concurrency is not UNCHANGED:
        change["group_concurrency"] = group_concurrency
    group_rate = None if group_rate_limit is UNCHANGED else group_rate_limit
    if group_rate_limit is not UNCHANGED:
        change["group_rate_limit"] = (
            None
            if group_rate is None
            else {"n": group_rate.n, "per": group_rate.per, "burst": group_rate.capacity}
        )
    params = {
        "kind": kind,
        "rate": None if rate is None else float(rate.n),
        "rate_per": None if rate is None else float(rate.per),
        "rate_burst": None if rate is None else rate.capacity,
        "set_rate": rate_limit is not UNCHANGED,
        "global_concurrency": None if global_concurrency is UNCHANGED else global_concurrency,
        "set_global": global_concurrency is not UNCHANGED,
        "group_concurrency": None if group_concurrency is UNCHANGED else group_concurrency,
        "set_group": group_concurrency is not UNCHANGED,
        "group_rate": None if group_rate is None else float(group_rate.n),
        "group_rate_per": None if group_rate is None else float(group_rate.per),
        "group_rate_burst": None if group_rate is None else group_rate.capacity,
        "set_group_rate": group_rate_limit is not UNCHANGED,
        "actor": actor,
        "change": json.dumps(change),
        "channel": queries.channel,
    }

    def steps() -> Steps[LimitOverrides]:
        if not registered:
            known = yield Statement(queries["kind_exists"], {"kind": kind})
            if not known[0][0]:
                raise unknown_kind(kind)
        rows = yield Statement(queries["set_kind_limits"], params)
        return _overrides(rows[0])

    return Operation(steps(), transactional=True)


def read_kind_limits(
    queries: Queries, kinds: Sequence[str], *, replica_ok: bool = True
) -> Operation[dict[str, LimitOverrides]]:
    """The overrides of ``kinds`` (kinds without any are left out); ``replica_ok=False`` for
    workers, which must see a change within a second (a replica may lag more)."""

    def steps() -> Steps[dict[str, LimitOverrides]]:
        rows = yield Statement(queries["read_kind_limits"], {"kinds": list(kinds)})
        return {row[0]: _overrides(row[1:]) for row in rows}

    return Operation(steps(), readonly=replica_ok)


def list_limit_changes(
    queries: Queries, kind: str, limit: int = 20
) -> Operation[list[tuple[datetime, str | None, dict[str, Any]]]]:
    """The newest changes of ``kind``'s overrides: (when, who, what), newest first."""
    validate_kind_name(kind)
    check_int("limit", limit, minimum=1, maximum=1000)

    def steps() -> Steps[list[tuple[datetime, str | None, dict[str, Any]]]]:
        rows = yield Statement(queries["list_limit_changes"], {"kind": kind, "limit": limit})
        return [(at, actor, json.loads(text)) for at, actor, text in rows]

    return Operation(steps(), readonly=True)
