"""The claim and the due poll use the open-tasks partial index, whatever else the table holds."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg

from pgqueue.store.queries import Queries
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
            {"kind": "k", "limit": 10, "lease": 30.0, "floor": None},
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
                {"kind": "k", "limit": limit, "lease": 30.0, "floor": None},
            ).fetchone()
            plan = json.dumps(rows[0] if rows else None)
            assert "tasks_open_idx" in plan, plan
            assert '"Seq Scan"' not in plan, (limit, plan)
        conn.rollback()


def test_the_due_poll_probes_the_index_not_the_table(db: Database) -> None:
    """The poll runs once a second in every idle process. Its "is anything due" probe was an
    ``EXISTS`` the planner answered with a sequential scan, betting on an early match: on a
    table of finished rows with the due ones at its end it read every row (170 ms for two
    million), each time."""
    queries = Queries(db.schema)
    with psycopg.connect(db.dsn) as conn:
        conn.execute(
            f"""INSERT INTO {db.schema}.tasks (kind, status, attempts_left, max_attempts,
                    delayed_till, finished_at)
                SELECT CASE WHEN g % 2 = 0 THEN 'other' ELSE 'k' END,
                       CASE WHEN g % 2 = 0 THEN 'succeeded' ELSE 'new' END::{db.schema}.task_status,
                       1, 1,
                       CASE WHEN g % 2 = 0 THEN now() ELSE now() + interval '1 year' END,
                       now()
                FROM generate_series(1, 40000) g"""
        )
        conn.execute(
            f"""INSERT INTO {db.schema}.tasks (kind, attempts_left, max_attempts)
                SELECT 'k', 1, 1 FROM generate_series(1, 100)"""
        )
        conn.execute(f"ANALYZE {db.schema}.tasks")
        rows = conn.execute(
            "EXPLAIN (FORMAT JSON) " + queries["poll_due_kinds"],
            {"kinds": ["k", "other"], "floors": [None, None]},
        ).fetchone()
        plan = json.dumps(rows[0] if rows else None)
        assert "tasks_open_idx" in plan, plan
        assert '"Seq Scan"' not in plan, plan
        due = conn.execute(
            queries["poll_due_kinds"], {"kinds": ["k", "other"], "floors": [None, None]}
        ).fetchone()
        assert due is not None and due[1] == ["k"], due
        conn.rollback()


def test_kind_lookups_probe_the_indexes_not_the_table(db: Database) -> None:
    """Whether the database knows a kind (pause, resume, the API's kind pages) was a bare
    ``EXISTS`` on the tasks table: for a kind with no task, a sequential scan of every row."""
    queries = Queries(db.schema)
    with psycopg.connect(db.dsn) as conn:
        conn.execute(
            f"""INSERT INTO {db.schema}.tasks (kind, status, attempts_left, max_attempts,
                    finished_at)
                SELECT 'other', 'succeeded', 1, 1, now() FROM generate_series(1, 40000)"""
        )
        conn.execute(f"ANALYZE {db.schema}.tasks")
        params = {"kind": "unknown", "registered": False, "channel": "c"}
        for name in ("kind_exists", "pause_kind", "resume_kind"):
            rows = conn.execute("EXPLAIN (FORMAT JSON) " + queries[name], params).fetchone()
            scans = _scans(rows[0] if rows else None)
            assert ("Index Only Scan", "tasks") in scans, (name, scans)
            assert ("Seq Scan", "tasks") not in scans, (name, scans)
        for kind, known in (("unknown", False), ("other", True)):
            row = conn.execute(queries["kind_exists"], {"kind": kind}).fetchone()
            assert row is not None and row[0] is known, (kind, row)
        conn.rollback()


def _scans(plan: object) -> set[tuple[str, str]]:
    """(node type, relation) of every scan in an EXPLAIN (FORMAT JSON) plan."""
    found: set[tuple[str, str]] = set()
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            found.add((str(plan.get("Node Type")), str(plan["Relation Name"])))
        for value in plan.values():
            found |= _scans(value)
    elif isinstance(plan, list):
        for value in plan:
            found |= _scans(value)
    return found


def _explain_generic(
    conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]
) -> dict[str, Any]:
    """EXPLAIN ANALYZE ``sql`` run as a prepared statement with its generic plan, the plan a
    pooled connection keeps once the statement was prepared (the run is rolled back)."""
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))
    positional = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", sql)
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute(f"PREPARE generic AS {positional}")
    try:
        with conn.transaction(force_rollback=True):
            cur = psycopg.ClientCursor(conn)
            arguments = ", ".join(["%s"] * len(names))
            cur.execute(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE generic ({arguments})",
                [params[name] for name in names],
            )
            row = cur.fetchone()
    finally:
        conn.execute("DEALLOCATE generic")
    assert row is not None
    plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return dict(plan[0]["Plan"])


def _generic_claim_of_500(
    db: Database, statement: str, params: dict[str, Any]
) -> tuple[int, int, int]:
    """Claim 500 of 20,000 due tasks of kind ``k`` by ``statement``'s generic plan (rolled
    back): the rows it claimed, the buffers it touched, the rows its joins threw away."""
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(
            f"""INSERT INTO {db.schema}.tasks (kind, attempts_left, max_attempts, payload)
                SELECT 'k', 3, 3, '{{}}' FROM generate_series(1, 20000)"""
        )
        conn.execute(f"INSERT INTO {db.schema}.kind_limits (kind) VALUES ('k')")
        conn.execute(f"ANALYZE {db.schema}.tasks")
        plan = _explain_generic(conn, Queries(db.schema)[statement], params)
    buffers = int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])
    compared = _rows_removed_by_join_filters(plan)
    print(f"{statement} of 500 by the generic plan: {buffers} buffers, {compared} compared away")
    return int(plan["Actual Rows"]), buffers, compared


def test_a_large_claim_by_a_generic_plan_reads_each_claimed_row_once(db: Database) -> None:
    """Statements on pooled connections are prepared and end up on their generic plan, made
    without the limit's value. The claim's update looked its rows up through an id array beside
    a join to the due rows; on a queue of 20,000 tasks that plan read the whole array through
    the primary key again for every claimed row: 449,000 buffers and 140 ms for a claim of 500,
    against 6,000 buffers and 7 ms by one lookup per row."""
    claimed, buffers, compared = _generic_claim_of_500(
        db, "claim_due_tasks", {"kind": "k", "limit": 500, "lease": 30.0, "floor": None}
    )
    assert claimed == 500
    assert buffers < 30 * 500, buffers
    assert compared < 500, compared


def test_a_large_limited_claim_by_a_generic_plan_compares_no_list_with_another(
    db: Database,
) -> None:
    """The claim of a limited kind joined its chosen rows to the rows it locked; its generic
    plan compared each of one list with each of the other (249,500 comparisons, 60 of its 78 ms
    for 500 rows)."""
    claimed, buffers, compared = _generic_claim_of_500(
        db,
        "claim_limited_tasks",
        {
            "kind": "k",
            "limit": 500,
            "lease": 30.0,
            "rate": None,
            "burst": None,
            "global_concurrency": 1000,
            "group_concurrency": None,
            "counts_slots": True,
            "group_rate": None,
            "group_burst": None,
            "scan": 2000,
            "groups": None,
            "prepaid": 0,
            "reserve": 0,
            "max_wait": 1.0,
        },
    )
    assert claimed == 500
    assert buffers < 30 * 500, buffers
    assert compared < 500, compared


def _rows_removed_by_join_filters(plan: dict[str, Any]) -> int:
    """Rows that joins of the plan produced and threw away again, all loops together."""
    removed = int(plan.get("Rows Removed by Join Filter", 0))
    return removed + sum(_rows_removed_by_join_filters(child) for child in plan.get("Plans", []))


def test_every_claimed_row_carries_the_claims_start_time(db: Database) -> None:
    """The statement sends ``started_at`` with its first row only (one ``now()`` for all); the
    operation hands it to every row, as stored on each."""
    from pgqueue.adapters.psycopg import PsycopgExecutor
    from pgqueue.store.operations import claim_due_tasks

    queries = Queries(db.schema)
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(
            f"""INSERT INTO {db.schema}.tasks (kind, attempts_left, max_attempts, payload)
                SELECT 'k', 3, 3, '{{}}' FROM generate_series(1, 7)"""
        )
    executor = PsycopgExecutor(db.dsn)
    try:
        rows = executor.run(claim_due_tasks(queries, "k", 5, 30.0))
    finally:
        executor.close()
    assert len(rows) == 5
    stored = dict(
        db.fetch("SELECT id, started_at FROM {schema}.tasks WHERE started_at IS NOT NULL")
    )
    assert {row[0]: row[8] for row in rows} == stored
    assert len(set(stored.values())) == 1
