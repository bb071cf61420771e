"""The worker runtime's statements: claim, lease renewal, release, notify, listener ping, clock."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter

from pgqueue.store.executor import Operation, Row, Statement, Steps
from pgqueue.store.queries import Queries


def int_array(values: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers (the hot path skips per-element adaptation)."""
    return "{" + ",".join(map(str, values)) + "}"


def bare_array(values: Iterable[str]) -> str:
    """A PostgreSQL array literal of texts that need no quoting: UUIDs in canonical text (as
    claims return them), status names."""
    return "{" + ",".join(values) + "}"


def float_array(values: Iterable[float]) -> str:
    """A PostgreSQL array literal of floats (``repr`` round-trips through ``float8``)."""
    return "{" + ",".join(map(repr, map(float, values))) + "}"


def _quoted(text: str | None) -> str:
    if text is None:
        return "NULL"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def text_array(values: Iterable[str | None]) -> str:
    """A PostgreSQL array literal of any texts, None as NULL: every element in double quotes,
    its backslashes and double quotes escaped. (The driver's own list adaptation searches every
    element for characters to escape: ten times slower for JSON documents.)"""
    return "{" + ",".join(map(_quoted, values)) + "}"


CLAIMED_COLUMNS = 13
"""A claimed row: id, payload, external key, attempts elapsed, attempts left, max attempts,
claim token, messages, started at, lease lost, snoozes, workflow, trace context (the first
columns of ``claim_due_tasks``, and of the limited claim)."""
LEASE_LOST = 9
"""The column of a claimed row that says it was claimed before by a worker whose lease ran out."""
_POSITION = itemgetter(CLAIMED_COLUMNS)
_STARTED_AT = 8


def claim_due_tasks(queries: Queries, kind: str, limit: int, lease: float) -> Operation[list[Row]]:
    """Claim up to ``limit`` due tasks of ``kind``, leased for ``lease`` seconds: the claimed
    rows in claim order (empty while the kind is paused)."""

    def steps() -> Steps[list[Row]]:
        claimed = yield from claim_due_tasks_above(queries, kind, limit, lease, None).steps
        return claimed.rows

    return Operation(steps())


@dataclass(frozen=True, slots=True)
class Claimed:
    """What :func:`claim_due_tasks_above` claimed: the rows, in claim order; the oldest due time
    among the priority-0 ones (None: none); the database clock of the claim (None when it
    claimed nothing: nothing was due, or the kind is paused)."""

    rows: list[Row]
    oldest_due: datetime | None
    clock: datetime | None


def claim_due_tasks_above(
    queries: Queries, kind: str, limit: int, lease: float, floor: datetime | None
) -> Operation[Claimed]:
    """:func:`claim_due_tasks` reading priority-0 tasks from ``floor`` on (None: from the
    oldest)."""

    def steps() -> Steps[Claimed]:
        rows = yield Statement(
            queries["claim_due_tasks"],
            {"kind": kind, "limit": limit, "lease": lease, "floor": floor},
        )
        if not rows:
            return Claimed([], None, None)
        rows = sorted(rows, key=_POSITION)  # in claim order already, as a rule: a linear pass
        first = rows[0]
        width = CLAIMED_COLUMNS
        started = first[_STARTED_AT]  # the first row's only: the same now() for every row
        return Claimed(
            [(*row[:_STARTED_AT], started, *row[_STARTED_AT + 1 : width]) for row in rows],
            first[width + 1],
            first[width + 2],
        )

    return Operation(steps())


def extend_leases(
    queries: Queries, claims: Sequence[tuple[int, str]], lease: float
) -> Operation[set[int]]:
    """Renew to ``lease`` seconds the leases of ``(id, claim token)`` claims still held; returns
    the ids renewed (a claim cancelled or taken over meanwhile is not)."""

    def steps() -> Steps[set[int]]:
        rows = yield Statement(
            queries["extend_leases"],
            {
                "ids": int_array(c[0] for c in claims),
                "tokens": bare_array(c[1] for c in claims),
                "lease": lease,
            },
        )
        return {row[0] for row in rows}

    return Operation(steps())


def release_claims(queries: Queries, claims: Sequence[tuple[int, str]]) -> Operation[list[Row]]:
    """Hand ``(id, claim token)`` claims back at once, attempt refunded; returns the
    ``(id, kind)`` rows released."""

    def steps() -> Steps[list[Row]]:
        return (
            yield Statement(
                queries["release_claims"],
                {
                    "ids": int_array(c[0] for c in claims),
                    "tokens": bare_array(c[1] for c in claims),
                },
            )
        )

    return Operation(steps())


def notify_kinds(queries: Queries, kinds: Sequence[str]) -> Operation[None]:
    """Wake the workers of ``kinds`` in every process (a ``p:<kind>`` notification each)."""

    def steps() -> Steps[None]:
        yield Statement(queries["notify_kinds"], {"channel": queries.channel, "kinds": kinds})
        return None

    return Operation(steps())


def ping_listener(queries: Queries, payload: str) -> Operation[None]:
    """Send ``payload`` on the queue's channel (``listener_ping``), from a connection other
    than the listener's: the listener must hear it back."""

    def steps() -> Steps[None]:
        yield Statement(queries["listener_ping"], {"channel": queries.channel, "payload": payload})
        return None

    return Operation(steps())


def database_now(queries: Queries) -> Operation[datetime]:
    """The database clock, which every schedule follows."""

    def steps() -> Steps[datetime]:
        rows = yield Statement(queries["database_now"], {})
        now: datetime = rows[0][0]
        return now

    return Operation(steps())
