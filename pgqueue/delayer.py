"""Retry delays: how long a failed task waits before its next attempt."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from pgqueue.errors import InvalidOptions


@runtime_checkable
class Delayer(Protocol):
    """Maps the number of the attempt that just failed (1-based) to a delay in seconds."""

    def delay(self, attempt: int) -> float: ...


class Jitter(enum.Enum):
    """How randomness is mixed into a delay (AWS "Exponential Backoff and Jitter")."""

    FULL = "full"  # uniform in [0, d]
    EQUAL = "equal"  # d/2 + uniform in [0, d/2]
    ZERO = "zero"  # exactly d

    def apply(self, delay: float, rng: random.Random) -> float:
        if self is Jitter.FULL:
            return rng.uniform(0.0, delay)
        if self is Jitter.EQUAL:
            return delay / 2 + rng.uniform(0.0, delay / 2)
        return delay


def _check_non_negative(name: str, value: float) -> float:
    value = float(value)
    if value < 0 or value != value:  # NaN check
        raise InvalidOptions(f"{name} must be a non-negative number, got {value!r}")
    return value


@dataclass(frozen=True)
class JitterDelayer:
    """A constant delay with jitter: every retry waits about ``base`` seconds."""

    jitter: Jitter = Jitter.EQUAL
    base: float = 1.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_non_negative("base", self.base)

    def delay(self, attempt: int) -> float:
        return self.jitter.apply(float(self.base), self.rng)


@dataclass(frozen=True)
class ExpBackoffDelayer:
    """Exponential backoff: ``min(max, base * factor ** (attempt - 1))`` with jitter."""

    jitter: Jitter = Jitter.EQUAL
    base: float = 1.0
    max: float = 600.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_non_negative("base", self.base)
        _check_non_negative("max", self.max)
        if float(self.factor) < 1.0:
            raise InvalidOptions(f"factor must be >= 1, got {self.factor!r}")

    def delay(self, attempt: int) -> float:
        exponent = max(0, attempt - 1)
        try:
            raw = float(self.base) * float(self.factor) ** exponent
        except OverflowError:
            raw = float(self.max)
        return self.jitter.apply(min(float(self.max), raw), self.rng)


_BACKOFF_RNG = random.Random()  # shared by every Backoff: none pays for seeding its own


class Backoff:
    """Backoff for database retries: :class:`ExpBackoffDelayer`'s delays (equal jitter, the
    first about ``first`` seconds, doubling up to ``cap``) over a count of failures in a row.

    The delayer is built at the first failure, so a loop that never fails (a result batch
    written at once) pays for no more than this object.
    """

    __slots__ = ("_delayer", "cap", "failures", "first")

    def __init__(self, cap: float, first: float = 0.05) -> None:
        self.cap, self.first, self.failures = cap, first, 0
        self._delayer: ExpBackoffDelayer | None = None

    def next(self) -> float:
        """The delay before the next retry (one failure more)."""
        delayer = self._delayer
        if delayer is None:
            delayer = self._delayer = ExpBackoffDelayer(
                Jitter.EQUAL, base=self.first, max=self.cap, rng=_BACKOFF_RNG
            )
        self.failures += 1
        return delayer.delay(self.failures)

    def reset(self) -> None:
        """A success: the next failure waits about ``first`` again."""
        self.failures = 0
