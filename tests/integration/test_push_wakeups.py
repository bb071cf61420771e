"""Concurrent pushes through one queue object share wake-ups, and every task still wakes a
worker at once: the worker's poll period is far longer than the test, so only the
notifications can have woken it."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg

from pgqueue import AsyncQueue, KindOptions, LoopOptions, Queue, Task
from pgqueue.store.queries import Queries
from tests.conftest import Database

PUSHERS = 32
EACH = 20
SLOW_POLL = LoopOptions(poll_period=60.0)


class Notifications:
    """Counts the queue channel's notifications in a thread of its own."""

    def __init__(self, db: Database) -> None:
        self.conn = psycopg.connect(db.dsn, autocommit=True)
        self.conn.execute(f'LISTEN "{Queries(db.schema).channel}"')
        self.count = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.stop.is_set():
            for notify in self.conn.notifies(timeout=0.1):
                if notify.payload.startswith("n:"):  # a push of tasks due now
                    self.count += 1

    def close(self) -> int:
        self.stop.set()
        self.thread.join(5)
        self.conn.close()
        return self.count


def test_threads_pushing_at_once_share_wake_ups_and_every_task_runs_at_once(
    db: Database,
) -> None:
    ran = threading.Semaphore(0)
    listener = Notifications(db)
    with Queue(db.dsn, schema=db.schema, max_connections=PUSHERS) as queue:
        queue.register_kind(
            "k", lambda envelope: ran.release(), KindOptions(attempt_timeout=30, loop=SLOW_POLL)
        )
        queue.start()
        go = threading.Barrier(PUSHERS)

        def pusher() -> None:
            go.wait()
            for n in range(EACH):
                queue.push_task(Task("k", n))

        threads = [threading.Thread(target=pusher) for _ in range(PUSHERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pushed_at = time.monotonic()
        for _ in range(PUSHERS * EACH):
            assert ran.acquire(timeout=10), "a task waited for the poller: a wake-up was lost"
        drained_in = time.monotonic() - pushed_at
    notified = listener.close()
    print(f"{PUSHERS * EACH} pushes, {notified} notifications; drained {drained_in:.2f}s after")
    assert drained_in < 10
    assert notified < PUSHERS * EACH  # shared, not one per push


def test_asyncio_tasks_pushing_at_once_share_wake_ups_and_every_task_runs_at_once(
    db: Database,
) -> None:
    async def scenario() -> int:
        done = asyncio.Event()
        ran = 0

        async def handler(envelope: object) -> None:
            nonlocal ran
            ran += 1
            if ran == PUSHERS * EACH:
                done.set()

        async with AsyncQueue(db.dsn, schema=db.schema, max_connections=PUSHERS) as queue:
            queue.register_kind("k", handler, KindOptions(attempt_timeout=30, loop=SLOW_POLL))
            await queue.start()

            async def pusher() -> None:
                for n in range(EACH):
                    await queue.push_task(Task("k", n))

            await asyncio.gather(*(pusher() for _ in range(PUSHERS)))
            await asyncio.wait_for(done.wait(), 10)
        return ran

    listener = Notifications(db)
    ran = asyncio.run(scenario())
    notified = listener.close()
    print(f"{PUSHERS * EACH} pushes, {notified} notifications")
    assert ran == PUSHERS * EACH
    assert notified < PUSHERS * EACH
