"""A limiter of the application's own, sync or async, asked before each claim of its kind."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from pgqueue import AsyncQueue, KindOptions, Limiter, LoopOptions, Queue, Task
from tests.conftest import Database
from tests.helpers import Recorder

FAST = LoopOptions(poll_period=0.2, lease_margin=2.0)


class Budget:
    """Lets ``per_call`` attempts start per question, ``total`` in all; records the questions."""

    def __init__(self, per_call: int, total: int) -> None:
        self.per_call = per_call
        self.left = total
        self.asked: list[int] = []
        self.lock = threading.Lock()

    def allow(self, kind: str, wanted: int) -> int:
        with self.lock:
            self.asked.append(wanted)
            granted = min(wanted, self.per_call, self.left)
            self.left -= granted
            return granted


class AsyncBudget(Budget):
    async def allow(self, kind: str, wanted: int) -> int:  # type: ignore[override]
        await asyncio.sleep(0)
        return Budget.allow(self, kind, wanted)


def test_a_sync_limiter_decides_how_many_start(db: Database) -> None:
    budget = Budget(per_call=2, total=6)
    assert isinstance(budget, Limiter)
    running = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def handler(envelope: Any) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(5)
        with lock:
            running -= 1

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind(
            "k", handler, KindOptions(attempt_timeout=10, worker_count=8, limiter=budget, loop=FAST)
        )
        recorder = Recorder(queue)
        queue.push_tasks([Task("k", n) for n in range(10)])
        queue.start()
        recorder.wait(lambda r: len(r.claimed) >= 6)
        release.set()
        recorder.wait_count(6)
        # The budget is spent: the other four stay waiting, with no attempt consumed.
        waiting = db.scalar(
            "SELECT count(*) FROM {schema}.tasks WHERE status = 'new' AND attempts_elapsed = 0"
        )
        assert waiting == 4
        assert len(recorder.claimed) == 6
    assert all(1 <= wanted <= 8 for wanted in budget.asked)
    assert budget.asked[0] == 8  # asked for every idle worker


def test_an_async_limiter_works_under_the_async_queue(db: Database) -> None:
    budget = AsyncBudget(per_call=1, total=100)

    async def main() -> None:
        async with AsyncQueue(db.dsn, schema=db.schema) as queue:
            done = asyncio.Event()
            seen: list[int] = []

            async def handler(envelope: Any) -> None:
                seen.append(envelope.payload)
                if len(seen) == 5:
                    done.set()

            queue.register_kind(
                "k", handler, KindOptions(attempt_timeout=5, limiter=budget, loop=FAST)
            )
            await queue.push_tasks([Task("k", n) for n in range(5)])
            await queue.start()
            await asyncio.wait_for(done.wait(), 20)
            assert sorted(seen) == list(range(5))

    asyncio.run(main())
    assert budget.asked and len(budget.asked) >= 5


class Captured(logging.Handler):
    """Records of one logger, whatever other tests did to the logging configuration."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_limiter_that_raises_is_logged_and_the_loop_goes_on(db: Database) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        def allow(self, kind: str, wanted: int) -> int:
            self.calls += 1
            if self.calls <= 3:
                raise RuntimeError("quota service down")
            if self.calls == 4:
                return "many"  # type: ignore[return-value]
            return wanted

    flaky = Flaky()
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind(
            "k", lambda envelope: None, KindOptions(attempt_timeout=5, limiter=flaky, loop=FAST)
        )
        recorder = Recorder(queue)
        ids = queue.push_tasks([Task("k", n) for n in range(3)])
        captured = Captured()
        logger = logging.getLogger("pgqueue.worker")
        # A host Alembic project run in this process (the migration tests) applies its logging
        # file, which disables the loggers that existed then.
        logger.disabled = False
        logger.addHandler(captured)
        try:
            queue.start()
            recorder.wait(lambda r: all(r.status_of(i) == "succeeded" for i in ids if i))
        finally:
            logger.removeHandler(captured)
    failures = [r for r in captured.records if "limiter of 'k' failed" in r.getMessage()]
    assert len(failures) == 4, [r.getMessage() for r in failures]
    assert "quota service down" in failures[0].getMessage()
    assert db.scalar("SELECT max(attempts_elapsed) FROM {schema}.tasks") == 1
