"""Where a kind's claims start reading its open tasks: the floor.

Every claim leaves dead versions of the rows it changed in the open-tasks index, at the due
times the tasks had. Vacuum removes them, and a scan that finds one dead to everybody marks it
so later scans skip it. A long transaction anywhere in the database (a report, a forgotten
``BEGIN``) stops both: the dead entries pile up at the index's head, and a claim that starts
reading there walks all of them before it finds a due task, so claims slow down as the pile
grows, the queue falls behind, and the pile grows faster.

So the claim loop remembers where the due tasks begin. A claim that took fewer tasks than it
asked for claimed everything due by its clock; one that took a full batch found the oldest due
task. Either way, the next claim (and the due poller) reads priority-0 tasks from there, less
:data:`MARGIN` for tasks whose pushing transaction began earlier and committed later. Every
:data:`FULL_SCAN_PERIOD` the loop reads from the index's head once more, which finds anything
the floor hid (a push in a transaction longer than the margin, a claim that rolled back), so
such a task waits at most that long. A push's notification carries its tasks' due time, so a
push committed below the floor (its transaction was longer than the margin) makes the next
read start from the head at once, and so does a wait's mark of a waiting task (which a claim
meeting it skips): those tasks are read at once. Prioritised tasks
are read in their own index and are not floored.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

MARGIN = timedelta(seconds=1)
"""Reads start this much before the floor: a task pushed in a transaction that began up to this
long before its commit is found at once."""
FULL_SCAN_PERIOD = 5.0
"""Seconds between two reads from the index's head (the longest a task below the floor waits)."""


class ClaimFloor:
    """The floor of one kind in one process (see the module's text)."""

    __slots__ = ("clock", "value", "verified_at")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock  # the event loop's time
        self.value: datetime | None = None
        self.verified_at = float("-inf")  # when a read from the head last refreshed it

    def current(self) -> datetime | None:
        """Where the next read starts; None: from the head (no floor yet, or one is due)."""
        if self.value is None or self.clock() - self.verified_at >= FULL_SCAN_PERIOD:
            return None
        return self.value - MARGIN

    def reset(self) -> None:
        """Read from the head next time: a task below the floor may be due (a claim skipped
        it while another transaction held its row)."""
        self.verified_at = float("-inf")

    def due_at(self, epoch: float) -> None:
        """A task due at ``epoch`` (database clock, seconds) was just committed: when that lies
        below where reads start, the next read starts from the head (the task's transaction
        began before the floor moved past its due time)."""
        value = self.value
        if value is not None and epoch < (value - MARGIN).timestamp():
            self.reset()

    def claimed(
        self,
        used: datetime | None,
        took: int,
        limit: int,
        oldest_due: datetime | None,
        clock: datetime | None,
    ) -> None:
        """A claim that read from ``used`` (None: the head) took ``took`` of ``limit`` tasks,
        the oldest priority-0 one due at ``oldest_due``, at database time ``clock`` (None:
        it took nothing, and says nothing: the kind may be paused; the floor stays, which is
        always safe, as reads from below it find everything above it)."""
        if clock is None:
            return
        if took < limit:
            found = clock  # everything due by then was claimed (or is being, elsewhere)
        elif oldest_due is not None:
            found = oldest_due  # a full batch: the due tasks begin here
        else:
            return  # a full batch of prioritised tasks says nothing of the others
        self._found(found, from_head=used is None)

    def polled(self, oldest_open: datetime | None, clock: datetime) -> None:
        """The due poller read the kind's open tasks from the head: the oldest is due at
        ``oldest_open`` (None: there is none) at database time ``clock``."""
        found = clock if oldest_open is None else min(oldest_open, clock)
        self._found(found, from_head=True)

    def _found(self, found: datetime, from_head: bool) -> None:
        if from_head:
            self.value = found
            self.verified_at = self.clock()
        elif self.value is not None:
            # Within the margin a claim may find an older task than the floor: start there.
            self.value = found
