"""pgqueue notices a server that cannot keep the tasks table small: autovacuum off on the server
or on the table, or dead rows far past autovacuum's trigger. ``table_health()``, ``pgqueue
status``, the ``pgqueue_table_*`` metrics and the dashboard's overview say so, with what to do.

The suite runs on servers with autovacuum on and off, so each test reads the server's setting
and expects the problem that setting implies."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from pgqueue import AsyncQueue, KindOptions, Queue, Task
from pgqueue.store.operations import TableHealth
from tests.conftest import Database


def server_autovacuum(db: Database) -> bool:
    with psycopg.connect(db.dsn) as conn:
        return conn.execute("SHOW autovacuum").fetchone() == ("on",)


def set_table_autovacuum(db: Database, enabled: bool) -> None:
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        if enabled:
            conn.execute(f"ALTER TABLE {db.schema}.tasks RESET (autovacuum_enabled)")
        else:
            conn.execute(f"ALTER TABLE {db.schema}.tasks SET (autovacuum_enabled = false)")


def expected_problem(db: Database, table_enabled: bool) -> str | None:
    if not server_autovacuum(db):
        return "autovacuum is off on this server"
    return None if table_enabled else f"autovacuum is disabled for {db.schema}.tasks"


def health(db: Database) -> TableHealth:
    with Queue(db.dsn, schema=db.schema) as queue:
        return queue.table_health()


def test_the_figures_are_the_tasks_tables(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", KindOptions(attempt_timeout=5))
        queue.push_tasks([Task("k", {"n": n}) for n in range(500)])
        found = queue.table_health()
    assert found.schema == db.schema
    assert found.total_bytes >= found.table_bytes > 0
    assert found.dead_rows >= 0 and found.live_rows >= 0
    assert found.server_autovacuum is server_autovacuum(db)
    assert found.table_autovacuum is True
    assert found.vacuum_trigger > 0  # the table's own threshold + scale factor x live rows


@pytest.mark.parametrize("table_enabled", [True, False], ids=["table on", "table off"])
def test_autovacuum_off_is_a_problem_with_its_remedy(db: Database, table_enabled: bool) -> None:
    set_table_autovacuum(db, table_enabled)
    problems = health(db).problems
    expected = expected_problem(db, table_enabled)
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert expected in problems[0]
        assert "VACUUM" in problems[0] or "RESET (autovacuum_enabled)" in problems[0]


async def test_the_async_queue_reads_the_same(db: Database) -> None:
    set_table_autovacuum(db, False)
    async with AsyncQueue(db.dsn, schema=db.schema) as queue:
        found = await queue.table_health()
    assert found.table_autovacuum is False
    assert found.problems


def test_status_warns_on_stderr_and_prints_the_figures(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    from pgqueue.cli.main import main

    set_table_autovacuum(db, False)
    with pytest.raises(SystemExit) as done:
        main(["status", "--dsn", db.dsn, "--schema", db.schema])
    assert done.value.code == 0
    out, err = capsys.readouterr()
    assert "tasks table: " in out and " dead rows" in out
    assert "pgqueue: warning: autovacuum is" in err
    with pytest.raises(SystemExit):
        main(["status", "--dsn", db.dsn, "--schema", db.schema, "--json"])
    out, err = capsys.readouterr()
    assert out.lstrip().startswith("[")  # the JSON document alone on stdout
    assert "pgqueue: warning: autovacuum is" in err


def test_the_metrics_count_the_problems(db: Database) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pgqueue.metrics import instrument

    set_table_autovacuum(db, False)
    registry = CollectorRegistry()
    with Queue(db.dsn, schema=db.schema) as queue:
        metrics = instrument(queue, registry)
        text = generate_latest(registry).decode()
        metrics.close()
    assert "pgqueue_table_upkeep_problems 1.0" in text
    assert 'pgqueue_table_bytes{part="total"}' in text
    assert "pgqueue_table_dead_rows " in text


async def test_the_dashboard_overview_shows_figures_and_problems(db: Database) -> None:
    import httpx

    from pgqueue.http import create_app
    from pgqueue.http.settings import HttpSettings

    set_table_autovacuum(db, False)
    async with AsyncQueue(db.dsn, schema=db.schema) as queue:
        app = create_app(queue, HttpSettings(dsn=db.dsn, schema=db.schema))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            page = (await client.get("/")).text
    assert 'id="table-health"' in page and 'id="dead-rows"' in page
    assert "autovacuum is" in page and 'role="alert"' in page


def test_the_tuning_pages_query_for_long_transactions_runs(db: Database) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "tuning.md").read_text()
    [query] = re.findall(r"```sql\n(.*?)```", page, flags=re.S)
    with psycopg.connect(db.dsn) as conn:
        rows = conn.execute(query).fetchall()  # this very connection's transaction is listed
    assert rows and all(len(row) == 5 for row in rows)
