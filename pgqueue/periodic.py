"""Periodic tasks: a kind enqueued every N seconds or on a cron expression.

Each occurrence is an ordinary task whose external key names its time slot. The kinds table
remembers the latest slot enqueued, advanced with a conditional upsert, so any number of
processes create exactly one task per slot whatever the retention; a slot missed while nothing
ran is enqueued once on start (the latest one), not once per missed slot.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from pgqueue.errors import InvalidOptions
from pgqueue.options import Seconds, to_seconds

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Schedule:
    """When a periodic kind is due: ``every`` seconds (aligned to the epoch) or a ``cron``
    expression evaluated in ``tz`` (so it follows daylight-saving changes)."""

    every: float | None = None
    cron: str | None = None
    tz: str = "UTC"
    _zone: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise InvalidOptions("a periodic schedule needs exactly one of every= or cron=")
        try:
            object.__setattr__(self, "_zone", ZoneInfo(self.tz))
        except Exception as exc:
            raise InvalidOptions(f"unknown time zone {self.tz!r}") from exc
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise InvalidOptions(f"invalid cron expression {self.cron!r}")

    def latest_slot(self, now: datetime) -> datetime:
        """The start of the latest slot at or before ``now`` (UTC)."""
        if self.every is not None:
            seconds = (now - EPOCH).total_seconds()
            return EPOCH + timedelta(seconds=math.floor(seconds / self.every) * self.every)
        assert self.cron is not None
        local = now.astimezone(self._zone) + timedelta(microseconds=1)
        previous: datetime = croniter(self.cron, local).get_prev(datetime)
        return previous.astimezone(UTC)

    def next_slot(self, after: datetime) -> datetime:
        """The first slot strictly after ``after`` (UTC)."""
        if self.every is not None:
            return self.latest_slot(after) + timedelta(seconds=self.every)
        assert self.cron is not None
        following: datetime = croniter(self.cron, after.astimezone(self._zone)).get_next(datetime)
        return following.astimezone(UTC)

    def shortest_gap(self, samples: int = 64) -> float:
        """The shortest time between consecutive slots (sampled for cron)."""
        if self.every is not None:
            return self.every
        slot = self.next_slot(datetime.now(UTC))
        gap = math.inf
        for _ in range(samples):
            following = self.next_slot(slot)
            gap = min(gap, (following - slot).total_seconds())
            slot = following
        return gap


@dataclass(frozen=True)
class Periodic:
    kind: str
    schedule: Schedule
    payload: Any = None
    # Whether this process's queue creates the task of a slot: all of them, unless a sharded
    # queue gives each shard the slots whose key routes to it.
    owns: Callable[[datetime], bool] | None = field(default=None, compare=False)

    def creates(self, slot: datetime) -> bool:
        """True when this queue enqueues the task of ``slot``."""
        return self.owns is None or self.owns(slot)

    def external_key(self, slot: datetime) -> str:
        return periodic_key(slot)


def periodic_key(slot: datetime) -> str:
    """The external key of a periodic slot's task: ``periodic:<slot start, UTC ISO>``."""
    return f"periodic:{slot.astimezone(UTC).isoformat()}"


def make_schedule(every: Seconds | None, cron: str | None, tz: str) -> Schedule:
    seconds = None if every is None else to_seconds(every, "every", allow_zero=False)
    return Schedule(every=seconds, cron=cron, tz=tz)
