"""What the runtime's pieces share, so that none of them imports the supervisor.

The claim loops (:mod:`.producer`), the result writer (:mod:`.completer`), the listener
(:mod:`.notifier`) and the maintenance loops (:mod:`.maintenance`) each receive the
:class:`RuntimeContext`: the database, the queue's events, the stop signal, the due poller and
two hand-offs (wake a kind, hand claims back). The supervisor (:class:`~.supervisor.Runtime`)
is the one implementation; the pieces it wires together (the workers, the writer) are passed
to whichever piece needs them.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from pgqueue.events import EventBus
from pgqueue.registry import KindRegistry
from pgqueue.runtime.poller import DuePoller
from pgqueue.store.executor import AsyncExecutor
from pgqueue.store.queries import Queries


class RuntimeContext(ABC):
    """The state and services the runtime's pieces share while one queue runs."""

    def __init__(
        self,
        registry: KindRegistry,
        queries: Queries,
        executor: AsyncExecutor,
        events: EventBus | None = None,
    ) -> None:
        self.registry = registry
        self.queries = queries
        self.executor = executor
        self.events = events or EventBus()
        self.max_db_retry_delay = 5.0  # the backoff cap of every retried database call
        self.stopping = False
        self._stop_event = asyncio.Event()
        self.listening = asyncio.Event()  # set while the LISTEN connection is up
        self.poller: DuePoller | None = None
        # Attempts that ended (deadline or cancel) while their sync handler's thread still runs:
        # each keeps its claim and worker slot until the thread returns. A gauge for metrics.
        self.stuck_threads = 0
        self.listener_restarts = 0  # silent LISTEN connections detected and replaced

    def signal_stop(self) -> None:
        """Tell every loop to stop: ``stopping`` turns true and sleeps end at once."""
        self.stopping = True
        self._stop_event.set()

    async def sleep_unless_stopping(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the runtime stops meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                await self._stop_event.wait()
        except TimeoutError:
            pass

    @abstractmethod
    def wake(self, kind: str, from_head: bool = False, due_at: float | None = None) -> None:
        """Wake the claim loop of ``kind`` (work may be due); ``from_head``: its next claim
        reads the open tasks from the index's head, not from its floor (a task below the
        floor may be due); ``due_at``: a task due at that epoch (database clock, seconds) was
        committed, and the next claim reads from the head if the floor lies above it."""

    @abstractmethod
    def release_later(self, claims: list[tuple[int, str]]) -> None:
        """Hand ``(id, claim token)`` claims back to the queue in the background."""
