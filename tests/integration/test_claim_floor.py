"""The claim floor against a real PostgreSQL: a long transaction elsewhere keeps the dead
index entries of claimed tasks; claims that start at the floor skip them, and nothing the
floor hides is lost (pgqueue/runtime/floors.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from pgqueue import KindOptions, LoopOptions, Queue, Task
from pgqueue.runtime import floors
from pgqueue.store import operations
from pgqueue.store.queries import Queries
from tests.conftest import Database
from tests.helpers import Recorder


def open_index_buffers(db: Database, queries: Queries, floor: Any) -> int:
    """Buffers the claim statement's read of the open-tasks index touches (the claim is run,
    then rolled back)."""
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + queries["claim_due_tasks"],
            {"kind": "k", "limit": 10, "lease": 30.0, "floor": floor},
        ).fetchone()
        conn.rollback()
    assert row is not None
    plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    scans = [node for node in nodes(plan[0]["Plan"]) if node.get("Index Name") == "tasks_open_idx"]
    assert len(scans) == 1, scans
    return int(scans[0]["Shared Hit Blocks"]) + int(scans[0]["Shared Read Blocks"])


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node] + [found for child in node.get("Plans", []) for found in nodes(child)]


def test_a_floored_claim_skips_what_a_long_transaction_keeps_from_vacuum(db: Database) -> None:
    queries = Queries(db.schema)
    with Queue(db.dsn, schema=db.schema) as queue, psycopg.connect(db.dsn) as pin:
        queue.declare_kind("k", KindOptions(attempt_timeout=30))
        # A transaction that has read something holds the horizon: nothing it could still see
        # is removed, by vacuum or by scans marking entries dead.
        pin.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        pin.execute("SELECT 1").fetchone()
        for _ in range(10):
            queue.push_tasks([Task("k", n) for n in range(1000)])
            claimed = queue.executor.run(
                operations.claim_due_tasks_above(queries, "k", 2000, 30.0, None)
            )
            assert len(claimed.rows) == 1000
            db.fetch(
                "DELETE FROM {schema}.tasks WHERE id = ANY(%s)",
                ([row[0] for row in claimed.rows],),
            )
        # Everything due by the last claim's clock was claimed: the floor is that clock.
        floor = claimed.clock
        queue.push_tasks([Task("k", n) for n in range(10)])
        from_head = open_index_buffers(db, queries, None)
        from_floor = open_index_buffers(db, queries, floor)
        found = queue.executor.run(operations.claim_due_tasks_above(queries, "k", 20, 30.0, floor))
        pin.rollback()
    print(f"open-index buffers: {from_head} from the head, {from_floor} from the floor")
    assert len(found.rows) == 10  # the floor hides no live task
    # 20,000 dead entries (10,000 tasks claimed, then deleted) at the head: a page of the
    # index and of the table every hundred or so; from the floor, the live ones alone.
    assert from_head >= 100
    assert from_floor * 10 < from_head


@contextmanager
def floored_queue(
    db: Database, monkeypatch: pytest.MonkeyPatch, poll_period: float, full_scan_period: float
) -> Iterator[tuple[Queue, Recorder, list[int]]]:
    """A started queue of kind ``k`` whose floor has no margin; it records the payloads run."""
    monkeypatch.setattr(floors, "MARGIN", floors.timedelta(0))
    monkeypatch.setattr(floors, "FULL_SCAN_PERIOD", full_scan_period)
    ran: list[int] = []

    def handler(envelope: Any) -> None:
        ran.append(envelope.payload)

    options = KindOptions(attempt_timeout=10, loop=LoopOptions(poll_period=poll_period))
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", handler, options)
        recorder = Recorder(queue)
        queue.start()
        queue.wait_listening()
        yield queue, recorder, ran


def test_a_task_below_the_floor_is_found_by_the_next_read_from_the_head(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that lands below the floor unannounced (here inserted due an hour ago, with no
    notification, as a claim that rolled back leaves its rows) is found by the periodic read
    from the head; the polls read from the floor."""
    with floored_queue(db, monkeypatch, poll_period=0.2, full_scan_period=0.5) as (
        queue,
        recorder,
        ran,
    ):
        queue.push_tasks([Task("k", n) for n in range(1, 4)])
        recorder.wait(lambda r: len(r.written) == 3)
        db.fetch(
            "INSERT INTO {schema}.tasks (kind, payload, attempts_left, max_attempts, delayed_till)"
            " VALUES ('k', '0', 3, 3, now() - interval '1 hour')"
        )
        recorder.wait(lambda r: len(r.written) == 4, timeout=15)
    assert sorted(ran) == [0, 1, 2, 3]


def test_a_task_pushed_below_the_floor_runs_as_soon_as_its_transaction_commits(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push's notification carries its tasks' due time. When that lies below the floor (the
    pushing transaction began before the floor moved past it and committed after), the
    notification makes the next claim read from the index's head: the task runs at once, not
    at the next periodic read from the head (a minute here) nor the next poll (a minute)."""
    with floored_queue(db, monkeypatch, poll_period=60.0, full_scan_period=60.0) as (
        queue,
        recorder,
        ran,
    ):
        # The first claim reads from the head; the floor it leaves is this claim's clock.
        queue.push_task(Task("k", 0))
        recorder.wait(lambda r: len(r.written) == 1)
        with psycopg.connect(db.dsn) as late:
            # Its due time is this transaction's start, before the task below.
            queue.push_task_tx(late, Task("k", 1))
            # Claimed by a read from the floor, which moves past the late task's due time.
            queue.push_task(Task("k", 2))
            recorder.wait(lambda r: len(r.written) == 2)
            late.commit()
        recorder.wait(lambda r: len(r.written) == 3, timeout=10)
    assert sorted(ran) == [0, 1, 2]


def test_a_delayed_task_committed_after_its_due_time_passed_the_floor_runs_at_once(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, for a delayed push: its transaction commits after the floor moved past the
    task's due time, and the due time its notification carries sends the next read to the
    head."""
    with floored_queue(db, monkeypatch, poll_period=60.0, full_scan_period=60.0) as (
        queue,
        recorder,
        ran,
    ):
        queue.push_task(Task("k", 0))
        recorder.wait(lambda r: len(r.written) == 1)
        with psycopg.connect(db.dsn) as late, psycopg.connect(db.dsn, autocommit=True) as clock:
            queue.push_task_tx(late, Task("k", 1), delay=0.2)
            due = late.execute("SELECT now() + interval '0.2 seconds'").fetchone()
            assert due is not None
            # The next claim's clock must be past the late task's due time: wait for the
            # database's clock to pass it (no event marks that).
            while clock.execute("SELECT clock_timestamp() <= %s", due).fetchone() == (True,):
                time.sleep(0.02)
            queue.push_task(Task("k", 2))
            recorder.wait(lambda r: len(r.written) == 2)
            late.commit()
        recorder.wait(lambda r: len(r.written) == 3, timeout=10)
    assert sorted(ran) == [0, 1, 2]
