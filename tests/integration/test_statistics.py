"""The tasks table's planner statistics (pgqueue/runtime/statistics.py): a claim prepared while
the table was nearly empty keeps a plan that scans the whole table in every claim, until
ANALYZE gives the planner the table's real size; pgqueue runs that ANALYZE itself.

The claim is prepared with ``plan_cache_mode = force_generic_plan``: the plan kept is then the
one made on the table as it was, as it is on a busy pool once the server settles on the generic
plan (after five custom ones), whatever the costs it compares to decide that."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgqueue import KindOptions, Queue, Task
from pgqueue.store import operations
from pgqueue.store.queries import Queries, schema_ddl
from tests.conftest import Database
from tests.helpers import wait_until


@pytest.fixture
def own_db(server_dsn: str) -> Iterator[Database]:
    """pgqueue's tables in a database of the test's own. PostgreSQL drops every plan that any
    backend of a database keeps whenever a schema of that database is made or dropped (its plan
    cache resets on each change to pg_namespace), and every other test of a parallel run makes
    and drops a schema: the plans these tests watch would not last in the shared database."""
    name = f"stats_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        db = Database(make_conninfo(server_dsn, dbname=name), f"t_{uuid.uuid4().hex[:12]}")
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute(schema_ddl(db.schema))
        yield db
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node] + [found for child in node.get("Plans", []) for found in plan_nodes(child)]


def prepared_claim(conn: psycopg.Connection[Any], queries: Queries) -> None:
    sql = queries["claim_due_tasks"]
    for name, number in (("kind", 1), ("limit", 2), ("lease", 3), ("floor", 4)):
        sql = sql.replace(f"%({name})s", f"${number}")
    conn.execute(f"PREPARE claim (text, int, float8, timestamptz) AS {sql}")


def claim_plan(conn: psycopg.Connection[Any]) -> tuple[int, list[str]]:
    """Buffers the prepared claim touches, and the tables it reads by sequential scan (the
    claim is rolled back). How many of the buffers its index reads touch depends on whether the
    deleted rows' entries were marked dead yet, which another test's open snapshot on a shared
    server can hold off: the sequential scans are what the statistics decide."""
    conn.execute("BEGIN")
    row = conn.execute(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE claim ('k', 16, 30.0, NULL)"
    ).fetchone()
    conn.execute("ROLLBACK")
    assert row is not None
    plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    nodes = plan_nodes(plan[0]["Plan"])
    buffers = int(plan[0]["Plan"]["Shared Hit Blocks"]) + int(plan[0]["Plan"]["Shared Read Blocks"])
    return buffers, [n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan"]


def seq_scanned(conn: psycopg.Connection[Any]) -> list[str]:
    """The tables the prepared claim's kept plan reads by sequential scan (EXPLAIN, not run)."""
    row = conn.execute("EXPLAIN (FORMAT JSON) EXECUTE claim ('k', 16, 30.0, NULL)").fetchone()
    assert row is not None
    plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return [n["Relation Name"] for n in plan_nodes(plan[0]["Plan"]) if n["Node Type"] == "Seq Scan"]


def plan_then_grow(queue: Queue, conn: psycopg.Connection[Any], db: Database, batches: int) -> bool:
    """Prepare the claim and make its generic plan on the table as it is, then grow the table
    as a busy queue does: ``batches`` of 5,000 tasks pushed, all but the last 2,000 ran and were
    deleted (the due ones are behind them). Whether the plan kept is still the one made before
    the growth: a backend that falls too far behind the server's invalidation queue (other
    connections' DDL) is reset, which drops every plan it keeps, and the caller sets up again."""
    conn.prepare_threshold = None  # this test's PREPARE is the only one on it
    conn.execute("SET plan_cache_mode = force_generic_plan")
    prepared_claim(conn, Queries(db.schema))
    queue.push_task(Task("k", 0))
    conn.execute("EXECUTE claim ('k', 16, 30.0, NULL)")  # the generic plan is made and kept
    planned = seq_scanned(conn)
    db.fetch(  # one statement, so the plan is at risk for as short a time as can be
        "INSERT INTO {schema}.tasks (kind, attempts_left, max_attempts, payload)"
        f" SELECT 'k', 3, 3, jsonb_build_object('n', n) FROM generate_series(1, {batches * 5000}) n"
    )
    db.fetch(
        "DELETE FROM {schema}.tasks WHERE id IN (SELECT id FROM {schema}.tasks"
        f" ORDER BY id LIMIT {batches * 5000 - 2000})"
    )
    assert "tasks" in planned, planned  # made on a table of one row: read by sequential scan
    return seq_scanned(conn) == planned


SETUPS = 5  # tries at a plan made on the small table that the server keeps through the growth


def vacuum_until_truncated(conn: psycopg.Connection[Any], db: Database) -> int:
    """VACUUM (ANALYZE) the tasks table until it is truncated; its pages at the end. Another
    test's open snapshot on a shared server keeps the deleted rows, and so the pages, until
    that transaction ends: try again until then, for 30 s at most."""
    deadline = time.monotonic() + 30
    while True:
        conn.execute(f"VACUUM (ANALYZE) {db.schema}.tasks")
        pages = int(
            db.fetch("SELECT relpages FROM pg_class WHERE oid = '{schema}.tasks'::regclass")[0][0]
        )
        if pages <= 1 or time.monotonic() > deadline:
            return pages
        time.sleep(0.1)


def refresh_until_analyzed(queue: Queue, queries: Queries) -> str | None:
    """Run the statistics check until it analyzes (the pushes' statistics reach the views once
    their backends report them, within a second or so); why it did, or None after 30 s."""
    deadline = time.monotonic() + 30
    why = None
    while why is None and time.monotonic() < deadline:
        why = queue.executor.run(operations.refresh_statistics(queries))
        if why is None:
            time.sleep(0.1)
    return why


def test_a_claim_planned_on_an_empty_table_reads_by_index_once_pgqueue_analyzed_it(
    own_db: Database,
) -> None:
    db = own_db
    queries = Queries(db.schema)
    # Autovacuum stays away from this table: what changes its statistics is the test's doing.
    db.fetch("ALTER TABLE {schema}.tasks SET (autovacuum_enabled = false)")
    with Queue(db.dsn, schema=db.schema) as queue, psycopg.connect(db.dsn, autocommit=True) as conn:
        queue.declare_kind("k", KindOptions(attempt_timeout=30))
        for _ in range(SETUPS):
            if plan_then_grow(queue, conn, db, batches=4):  # planned on a near-empty table
                break
            conn.execute("DEALLOCATE claim")  # the server dropped that plan: again
            db.fetch("TRUNCATE {schema}.tasks")  # never analyzed, still
        else:
            raise AssertionError(f"the server kept no plan through the growth in {SETUPS} tries")
        before, scanned_before = claim_plan(conn)
        why = refresh_until_analyzed(queue, queries)
        after, scanned_after = claim_plan(conn)
        again = queue.executor.run(operations.refresh_statistics(queries))
    print(f"claim buffers: {before} planned on the empty table, {after} after ANALYZE")
    assert why == "never analyzed"
    # Planned on the empty table, the claim reads the whole table in each claim; planned again
    # on the analyzed one, it reads its rows by index.
    assert scanned_before == ["tasks"], (before, scanned_before)
    assert scanned_after == [] and after < before, (before, after, scanned_after)
    assert again is None  # analyzed a moment ago: nothing to do


def test_a_running_queue_analyzes_a_new_table_within_seconds(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", lambda envelope: None, KindOptions(attempt_timeout=30))
        db.fetch("ALTER TABLE {schema}.tasks SET (autovacuum_enabled = false)")
        queue.push_tasks([Task("k", n) for n in range(3000)])
        queue.start()
        deadline = time.monotonic() + 30
        analyzed = None
        while analyzed is None and time.monotonic() < deadline:
            analyzed = db.fetch(
                "SELECT last_analyze FROM pg_stat_user_tables"
                " WHERE relid = '{schema}.tasks'::regclass"
            )[0][0]
            if analyzed is None:
                time.sleep(0.2)
    assert analyzed is not None


def test_a_claim_planned_after_vacuum_emptied_the_table_reads_by_index_once_it_grew(
    own_db: Database,
) -> None:
    """A drained queue's table is emptied and truncated by vacuum, which also sets its
    statistics (no rows, no pages): the plans made next are those of a new table, and stay made
    until autovacuum's next visit, a minute later, however far the table grows meanwhile."""
    db = own_db
    queries = Queries(db.schema)
    db.fetch("ALTER TABLE {schema}.tasks SET (autovacuum_enabled = false)")
    with Queue(db.dsn, schema=db.schema) as queue, psycopg.connect(db.dsn, autocommit=True) as conn:
        queue.declare_kind("k", KindOptions(attempt_timeout=30))
        for _ in range(SETUPS):
            queue.push_tasks([Task("k", n) for n in range(5000)])
            conn.execute(f"ANALYZE {db.schema}.tasks")  # statistics exist: not a new table
            db.fetch("DELETE FROM {schema}.tasks")  # the queue ran dry (TTL 0)
            assert vacuum_until_truncated(conn, db) <= 1  # autovacuum's visit: truncated
            assert queue.executor.run(operations.refresh_statistics(queries)) is None
            if plan_then_grow(queue, conn, db, batches=8):  # planned on the emptied table
                break
            conn.execute("DEALLOCATE claim")  # the server dropped that plan: again
        else:
            raise AssertionError(f"the server kept no plan through the growth in {SETUPS} tries")
        before, scanned_before = claim_plan(conn)
        why = refresh_until_analyzed(queue, queries)
        claim_plan(conn)  # the first read by index marks the deleted rows' entries dead
        after, scanned_after = claim_plan(conn)
        again = queue.executor.run(operations.refresh_statistics(queries))
    print(f"claim buffers: {before} planned on the emptied table, {after} after ANALYZE")
    assert why is not None and why.startswith("grew")
    assert "tasks" in scanned_before, (before, scanned_before)
    assert scanned_after == [] and after < before, (before, after, scanned_after)
    assert again is None


def changes_seen(db: Database) -> int:
    """The table's changes since its last ANALYZE, as the statistics views show them (the
    pushing backend reports them within a second or so)."""
    return int(
        db.fetch(
            "SELECT n_mod_since_analyze FROM pg_stat_user_tables"
            " WHERE relid = '{schema}.tasks'::regclass"
        )[0][0]
    )


def analyze_waits_for_a_lock(watcher: psycopg.Connection[Any], db: Database) -> bool:
    """Whether a backend's ANALYZE of this test's table waits for a lock."""
    row = watcher.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
        (f"ANALYZE {db.schema}.tasks%",),
    ).fetchone()
    return row is not None and row[0] > 0


# One process of a fleet: its statistics check, its verdict printed (repr) when it is done.
CHECK_IN_A_PROCESS = """
import os
from pgqueue import Queue
from pgqueue.store import operations
with Queue(os.environ["PGQUEUE_DSN"], schema=os.environ["PGQUEUE_SCHEMA"]) as queue:
    print(repr(queue.executor.run(operations.refresh_statistics(queue.queries))), flush=True)
"""


def check_in_a_process(db: Database) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHECK_IN_A_PROCESS],
        env=db.env(),
        stdout=subprocess.PIPE,
        text=True,
    )


def test_one_process_of_a_fleet_analyzes_while_the_others_skip(db: Database) -> None:
    """The check takes a transaction advisory lock: the process that holds it runs ANALYZE in
    the same transaction, and every other process's check finds the lock taken and does
    nothing, rather than queueing one ANALYZE of its own behind it."""
    db.fetch("ALTER TABLE {schema}.tasks SET (autovacuum_enabled = false)")
    with (
        Queue(db.dsn, schema=db.schema) as queue,
        psycopg.connect(db.dsn) as blocker,
        psycopg.connect(db.dsn, autocommit=True) as watcher,
    ):
        queue.declare_kind("k", KindOptions(attempt_timeout=30))
        queue.push_tasks([Task("k", n) for n in range(3000)])
        # Never analyzed, and changed enough: both checks would run.
        wait_until(lambda: changes_seen(db) >= 3000, step=0.1)
        # ANALYZE takes this lock mode too: the first process's ANALYZE waits while it is held.
        blocker.execute(f"LOCK TABLE {db.schema}.tasks IN SHARE UPDATE EXCLUSIVE MODE")
        first = check_in_a_process(db)
        second: subprocess.Popen[str] | None = None
        try:
            wait_until(lambda: analyze_waits_for_a_lock(watcher, db), step=0.05)
            second = check_in_a_process(db)
            try:
                skipped, _ = second.communicate(timeout=10)
            except subprocess.TimeoutExpired:  # it waits behind the lock: an ANALYZE of its own
                skipped = "still waiting after 10 s"
        finally:
            blocker.rollback()
            why, _ = first.communicate(timeout=30)
            if second is not None and second.poll() is None:
                second.communicate(timeout=30)
    assert why.strip() == "'never analyzed'", why
    assert skipped.strip() == "None", f"the second process's check did not skip: {skipped!r}"
