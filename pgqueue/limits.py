"""Flow control: the token bucket :class:`RateLimit` and the :class:`Limiter` protocol.

Limits hold for the whole fleet: they are decided in the database where tasks are claimed (see
the "Flow control" page of the documentation).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pgqueue.bounds import MAX_SECONDS
from pgqueue.errors import InvalidOptions

MAX_RATE_PERIOD = MAX_SECONDS  # seconds: the longest period
MAX_BURST = 1_000_000


def _positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOptions(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise InvalidOptions(f"{name} must be a finite number > 0, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``n`` attempt starts per ``per`` seconds on average, at most ``burst`` at once.

    A token bucket kept in the database: it holds up to ``burst`` tokens (``n`` rounded up by
    default, at least 1), refills at ``n / per`` tokens a second, and every attempt start (first
    attempts and retries alike) takes one.
    """

    n: float
    per: float = 1.0
    burst: int | None = None

    def __post_init__(self) -> None:
        _positive_number("RateLimit.n", self.n)
        per = _positive_number("RateLimit.per", self.per)
        if per > MAX_RATE_PERIOD:
            raise InvalidOptions(f"RateLimit.per must be at most 10 years, got {self.per!r}")
        burst = self.burst
        if burst is not None and (
            isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_BURST
        ):
            raise InvalidOptions(
                f"RateLimit.burst must be an int from 1 to {MAX_BURST}, got {burst!r}"
            )

    @property
    def per_second(self) -> float:
        """Tokens added per second."""
        return float(self.n) / float(self.per)

    @property
    def capacity(self) -> int:
        """The bucket's size: ``burst``, or ``n`` rounded up (at least 1)."""
        if self.burst is not None:
            return self.burst
        return max(1, min(MAX_BURST, math.ceil(self.n)))

    def divided(self, parts: int) -> RateLimit:
        """This limit shared by ``parts`` (the shards of a sharded queue, where each shard
        enforces its own): ``n / parts`` per ``per``, the burst split likewise (at least 1)."""
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
            raise InvalidOptions(f"parts must be an int >= 1, got {parts!r}")
        return RateLimit(
            self.n / parts, per=self.per, burst=max(1, math.ceil(self.capacity / parts))
        )

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Read ``"10/s"``, ``"600/m"``, ``"5/h"``, ``"100/2.5s"`` or ``"10"`` (per second)."""
        raw = text.strip()
        count, _, unit = raw.partition("/")
        units = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86_400.0}
        try:
            n = float(count)
            unit = unit.strip() or "s"
            digits = unit.rstrip("abcdefghijklmnopqrstuvwxyz")
            suffix = unit[len(digits) :] or "s"
            per = (float(digits) if digits else 1.0) * units[suffix]
        except (ValueError, KeyError):
            raise InvalidOptions(f"rate must look like 10/s, 600/m or 5/h, got {text!r}") from None
        return cls(int(n) if n.is_integer() else n, per=per)


@runtime_checkable
class Limiter(Protocol):
    """A limiter of your own, asked before each claim of a kind how many of ``wanted``
    attempts may start now (0 to ``wanted``; sync or async).

    A limiter that raises is logged and treated as "none now": the kind asks again after a
    back-off. The built-in limits (``rate_limit``, ``global_concurrency``, group limits) apply
    as well, after it.
    """

    def allow(self, kind: str, wanted: int) -> int | Awaitable[int]: ...


def describe_limits(overrides: Any, options: Any) -> str:
    """A kind's limits in a few words (``rate 10/s*, max 5, group 1``): an operator's overrides,
    marked ``*``, else its code's options when known (either may be None)."""
    labels = {
        "rate_limit": "rate",
        "global_concurrency": "max",
        "group_concurrency": "group",
        "group_rate_limit": "group rate",
    }
    parts = []
    for name, label in labels.items():
        value = getattr(overrides, name, None)
        mark = "*" if value is not None else ""
        if value is None:
            value = getattr(options, name, None)
        if value is None:
            continue
        shown = describe_rate(value) if isinstance(value, RateLimit) else str(value)
        parts.append(f"{label} {shown}{mark}")
    return ", ".join(parts)


def describe_rate(rate: RateLimit) -> str:
    """``10/s``, ``600/m``, ``5/h`` or ``3/2.5s``, with ``(burst N)`` when it is not the count."""
    per = float(rate.per)
    unit = {1.0: "s", 60.0: "m", 3600.0: "h", 86_400.0: "d"}.get(per, f"{per:g}s")
    burst = "" if rate.capacity == max(1, math.ceil(rate.n)) else f" (burst {rate.capacity})"
    return f"{rate.n:g}/{unit}{burst}"


@dataclass(frozen=True, slots=True)
class LimitOverrides:
    """An operator's overrides of a kind's limits (``None``: the code's value applies)."""

    rate_limit: RateLimit | None = None
    global_concurrency: int | None = None
    group_concurrency: int | None = None
    overridden_at: datetime | None = None
    group_rate_limit: RateLimit | None = None

    @property
    def any(self) -> bool:
        return (
            self.rate_limit is not None
            or self.global_concurrency is not None
            or self.group_concurrency is not None
            or self.group_rate_limit is not None
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate_limit": _rate_dict(self.rate_limit),
            "global_concurrency": self.global_concurrency,
            "group_concurrency": self.group_concurrency,
            "group_rate_limit": _rate_dict(self.group_rate_limit),
        }


def _rate_dict(rate: RateLimit | None) -> dict[str, Any] | None:
    return None if rate is None else {"n": rate.n, "per": rate.per, "burst": rate.capacity}
