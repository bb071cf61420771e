"""The claim statement uses its partial index, whatever else the table holds."""

from __future__ import annotations

import json

import psycopg

from pgqueue.queries import Queries
from tests.conftest import Database


def test_claim_uses_the_open_tasks_partial_index(db: Database) -> None:
    queries = Queries(db.schema)
    with psycopg.connect(db.dsn) as conn:
        # Many finished and many future rows, none due: the plan must not touch them.
        conn.execute(
            f"""INSERT INTO {db.schema}.tasks (kind, status, attempts_left, max_attempts,
                    delayed_till, finished_at)
                SELECT 'k',
                       CASE WHEN g % 2 = 0 THEN 'succeeded' ELSE 'new' END::{db.schema}.task_status,
                       1, 1, now() + interval '1 day', now()
                FROM generate_series(1, 20000) g"""
        )
        conn.execute(f"ANALYZE {db.schema}.tasks")
        rows = conn.execute(
            "EXPLAIN (FORMAT JSON) " + queries["claim_due_tasks"],
            {"kind": "k", "limit": 10, "lease": 30.0},
        ).fetchone()
        conn.rollback()
    plan = json.dumps(rows[0] if rows else None)
    assert "tasks_open_idx" in plan, plan
    assert '"Seq Scan"' not in plan, plan


def test_a_large_claim_reads_only_the_rows_it_takes(db: Database) -> None:
    """A claim of many rows on a table of due tasks updates them through the primary key.

    With a large limit the planner used to join the claimed ids to the table by hashing a
    sequential scan of every row, which doubled the claim's cost on a backlog of 20,000."""
    queries = Queries(db.schema)
    with psycopg.connect(db.dsn) as conn:
        conn.execute(
            f"""INSERT INTO {db.schema}.tasks (kind, attempts_left, max_attempts, payload)
                SELECT 'k', 3, 3, '{{}}' FROM generate_series(1, 20000)"""
        )
        conn.execute(f"ANALYZE {db.schema}.tasks")
        for limit in (10, 200, 1000):
            rows = conn.execute(
                "EXPLAIN (FORMAT JSON) " + queries["claim_due_tasks"],
                {"kind": "k", "limit": limit, "lease": 30.0},
            ).fetchone()
            plan = json.dumps(rows[0] if rows else None)
            assert "tasks_open_idx" in plan, plan
            assert '"Seq Scan"' not in plan, (limit, plan)
        conn.rollback()
