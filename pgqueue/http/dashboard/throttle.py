"""Login throttling: repeated wrong tokens from one client address slow down.

Each address may get ``free_failures`` tokens wrong; every further wrong token locks it out
for twice as long as the one before (``base_seconds`` first, up to ``max_seconds``).
While locked out, the login form answers 429 with ``Retry-After`` without looking at the token,
so guessing costs the guesser time, not the server work. A valid token clears the address's
record; a record is forgotten ``forget_seconds`` after its last failure. At most ``max_entries``
addresses are tracked (the least recently failing one is dropped first), so memory stays
bounded whatever the number of addresses.

The address is the ASGI client address. Behind a reverse proxy that is the proxy's, unless
uvicorn is told to trust the proxy's ``X-Forwarded-For`` (``--proxy-headers``,
``FORWARDED_ALLOW_IPS``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Record:
    failures: int
    last_failure: float
    locked_until: float


class LoginThrottle:
    """Failures and lockouts per client address (see the module's documentation)."""

    def __init__(
        self,
        *,
        free_failures: int = 5,
        base_seconds: float = 1.0,
        max_seconds: float = 300.0,
        forget_seconds: float = 900.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if free_failures < 0 or base_seconds <= 0 or max_seconds < base_seconds:
            raise ValueError(
                "login throttle: free_failures must be >= 0 and 0 < base_seconds <= max_seconds"
            )
        if forget_seconds < max_seconds or max_entries < 1:
            raise ValueError(
                "login throttle: forget_seconds must be >= max_seconds and max_entries >= 1"
            )
        self.free_failures = free_failures
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self.forget_seconds = forget_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def retry_after(self, address: str) -> int:
        """Whole seconds ``address`` must wait before its next try; 0 when it may try now."""
        now = self._clock()
        with self._lock:
            record = self._current(address, now)
            if record is None or record.locked_until <= now:
                return 0
            return max(1, math.ceil(record.locked_until - now))

    def failed(self, address: str) -> int:
        """Count a wrong token from ``address``; the lockout it earned, in whole seconds."""
        now = self._clock()
        with self._lock:
            record = self._current(address, now)
            if record is None:
                record = _Record(failures=0, last_failure=now, locked_until=now)
                self._records[address] = record
                while len(self._records) > self.max_entries:
                    self._records.popitem(last=False)
            record.failures += 1
            record.last_failure = now
            self._records.move_to_end(address)
            over = record.failures - self.free_failures
            if over <= 0:
                return 0
            lockout = min(self.max_seconds, self.base_seconds * (1 << min(over - 1, 60)))
            record.locked_until = now + lockout
            return math.ceil(lockout)

    def succeeded(self, address: str) -> None:
        """A valid token from ``address``: its failures are forgotten."""
        with self._lock:
            self._records.pop(address, None)

    def _current(self, address: str, now: float) -> _Record | None:
        record = self._records.get(address)
        if record is not None and now - record.last_failure > self.forget_seconds:
            del self._records[address]
            return None
        return record
