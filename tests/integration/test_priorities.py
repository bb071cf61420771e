"""Priorities: a claim takes the highest priority first, then the oldest due, through indexes."""

from __future__ import annotations

import json

import psycopg
import pytest

from pgqueue import InvalidTask, KindOptions, Queue, Task
from pgqueue.store import operations
from pgqueue.store.queries import Queries
from tests.conftest import Database
from tests.integration.test_claim_plan import _scans


def claim(queue: Queue, kind: str, limit: int) -> list[int]:
    rows = queue.executor.run(operations.claim_due_tasks(Queries(queue.schema), kind, limit, 30.0))
    return [row[0] for row in rows]


def test_a_claim_takes_higher_priorities_first_then_the_oldest_due(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", KindOptions(attempt_timeout=5))
        pushed = queue.push_tasks(
            [Task("k", {"n": n}, priority=p) for n, p in enumerate([0, -5, 10, 0, 100, 10, -100])]
        )
        # The batch shares one due time: make the order of due times the push order.
        db.fetch(
            "UPDATE {schema}.tasks SET delayed_till = now() - make_interval(secs => 1000 - id)"
        )
        first = claim(queue, "k", 3)
        rest = claim(queue, "k", 10)
    ids = dict(enumerate(pushed))
    assert first == [ids[4], ids[2], ids[5]]  # 100, then the two 10s oldest first
    assert rest == [ids[0], ids[3], ids[1], ids[6]]  # 0, 0, -5, -100


def test_the_kind_priority_is_the_default_and_a_task_priority_wins(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", KindOptions(attempt_timeout=5, priority=7))
        queue.push_task(Task("k", 1))
        queue.push_task(Task("k", 2, priority=-3, group="g1"))
        queue.push_tasks([Task("k", 3, external_key="x"), Task("k", 4, priority=0)])
    rows = db.fetch("SELECT payload::int, priority, task_group FROM {schema}.tasks ORDER BY 1")
    assert rows == [(1, 7, None), (2, -3, "g1"), (3, 7, None), (4, 0, None)]


@pytest.mark.parametrize("priority", [101, -101, True, 1.5, "1"])
def test_a_bad_priority_is_refused_before_any_sql(db: Database, priority: object) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", KindOptions(attempt_timeout=5))
        for push in (
            lambda: queue.push_task(Task("k", priority=priority)),  # type: ignore[arg-type]
            lambda: queue.push_tasks([Task("k"), Task("k", priority=priority)]),  # type: ignore[arg-type]
        ):
            with pytest.raises(InvalidTask, match="priority"):
                push()
    assert db.scalar("SELECT count(*) FROM {schema}.tasks") == 0


def test_the_claim_reads_both_open_indexes_and_no_table_scan(db: Database) -> None:
    queries = Queries(db.schema)
    with psycopg.connect(db.dsn) as conn:
        # A backlog of due tasks at priority 0, finished ones, and future ones at -1 and 1:
        # the prioritised parts must read the priority index, not filter the due backlog.
        conn.execute(
            f"""INSERT INTO {db.schema}.tasks (kind, status, attempts_left, max_attempts,
                    delayed_till, finished_at, priority)
                SELECT 'k',
                       CASE WHEN g % 3 = 0 THEN 'succeeded' ELSE 'new' END::{db.schema}.task_status,
                       1, 1,
                       CASE WHEN g % 3 = 1 THEN now() ELSE now() + interval '1 day' END,
                       now(), CASE WHEN g % 3 = 2 THEN (g % 2) * 2 - 1 ELSE 0 END
                FROM generate_series(1, 30000) g"""
        )
        conn.execute(f"ANALYZE {db.schema}.tasks")
        for limit in (10, 1000):
            rows = conn.execute(
                "EXPLAIN (FORMAT JSON) " + queries["claim_due_tasks"],
                {"kind": "k", "limit": limit, "lease": 30.0, "floor": None},
            ).fetchone()
            plan = rows[0] if rows else None
            scans = _scans(plan)
            text = json.dumps(plan)
            # Both prioritised parts read the priority index; the plain part the open index.
            assert text.count('"tasks_open_priority_idx"') == 2, text
            assert text.count('"tasks_open_idx"') == 1, text
            assert ("Seq Scan", "tasks") not in scans, (limit, scans)
        conn.rollback()


def test_without_priorities_the_priority_index_stays_empty(db: Database) -> None:
    """Unused priorities cost nothing: tasks at priority 0 get no entry in the priority index,
    and the claim's probe of it reads one empty leaf."""
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", KindOptions(attempt_timeout=5))
        queue.push_tasks([Task("k", n) for n in range(2000)])
    size = db.scalar(
        "SELECT pg_relation_size(%s::regclass)", (f"{db.schema}.tasks_open_priority_idx",)
    )
    open_size = db.scalar("SELECT pg_relation_size(%s::regclass)", (f"{db.schema}.tasks_open_idx",))
    assert size <= 8192 < open_size, (size, open_size)
