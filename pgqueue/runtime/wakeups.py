"""One wake-up for many concurrent pushes of a kind.

A push of a task due now notifies its kind's workers in the same statement. But PostgreSQL
serialises the commits of notifying transactions (a notifying commit holds a database-wide
lock through its WAL flush, so the queue of notifications stays in commit order): 64 threads
pushing one task each through one queue commit one after another instead of sharing flushes.

So while a notifying push of a kind is in flight from this queue object, other pushes of that
kind insert without notifying, and after they committed one trailing ``notify_kinds`` wakes
the workers: it is sent after their commits, so a worker it wakes sees their rows. The push
that finds nothing owed any more ends the run; pushes that commit while a trailing notify is on
its way are covered by one more. A lone push is one statement, as before; a failed trailing
notify costs latency only (the workers' due poller finds the tasks).
"""

from __future__ import annotations

import threading
from collections import Counter


class PushWakeups:
    """Which pushes of a queue object notify, and who sends the trailing notifications."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a blocking queue pushes from many threads
        self._notifying: Counter[str] = Counter()  # notifying pushes in flight, by kind
        self._owed: set[str] = set()  # kinds with a quiet push committed since the last notify
        self._sending: set[str] = set()  # kinds whose trailing notifications someone sends

    def begin(self, kind: str) -> bool:
        """Before a push of ``kind``: True when it must notify itself (nothing else will)."""
        with self._lock:
            if self._notifying[kind] or kind in self._sending:
                return False
            self._notifying[kind] += 1
            return True

    def end(self, kind: str, notified: bool, committed: bool) -> bool:
        """After a push: True when the caller is to send the trailing notifications (call
        :meth:`owed` until it says False, a ``notify_kinds`` for each True)."""
        with self._lock:
            if notified:
                self._notifying[kind] -= 1
                if not self._notifying[kind]:
                    del self._notifying[kind]
                return False
            if not committed:
                return False
            self._owed.add(kind)
            if kind in self._sending:
                return False
            self._sending.add(kind)
            return True

    def owed(self, kind: str) -> bool:
        """For the sender: True when one more notification is owed (it is taken), False when
        none is (the sender is done)."""
        with self._lock:
            if kind in self._owed:
                self._owed.discard(kind)
                return True
            self._sending.discard(kind)
            return False

    def abandon(self, kind: str) -> None:
        """The sender failed: drop what it owed (the due poller finds those tasks)."""
        with self._lock:
            self._owed.discard(kind)
            self._sending.discard(kind)
