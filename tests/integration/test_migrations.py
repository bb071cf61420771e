"""Migrations reach exactly the declared schema, downgrade removes everything, and the
revisions coexist with a host project's own Alembic history."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue.migrate as migrate
from pgqueue.store.queries import schema_ddl
from pgqueue.store.schema_version import known_revisions
from tests.conftest import Database

HEAD = known_revisions()[-1]


def catalog(dsn: str, schema: str) -> dict[str, Any]:
    """Everything about a schema that a migration could get wrong, schema name neutralised."""
    queries = {
        "columns": """
            SELECT table_name, column_name, data_type, udt_name, is_nullable,
                   coalesce(column_default, ''), is_identity, ordinal_position
            FROM information_schema.columns WHERE table_schema = %(s)s
              AND table_name <> 'pgqueue_alembic_version' ORDER BY 1, 8""",
        "constraints": """
            SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid)
            FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %(s)s AND c.relname <> 'pgqueue_alembic_version' ORDER BY 1, 2""",
        "indexes": """
            SELECT indexname, indexdef FROM pg_indexes
            WHERE schemaname = %(s)s AND tablename <> 'pgqueue_alembic_version' ORDER BY 1""",
        "enums": """
            SELECT t.typname, e.enumlabel, e.enumsortorder FROM pg_enum e
            JOIN pg_type t ON t.oid = e.enumtypid JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE n.nspname = %(s)s ORDER BY 1, 3""",
        "reloptions": """
            SELECT c.relname, c.relkind, coalesce(c.reloptions, '{}') FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %(s)s AND c.relname NOT LIKE 'pgqueue_alembic_version%%'
            ORDER BY 1""",
        "statistics": """
            SELECT s.stxname, s.stxkind::text, pg_get_statisticsobjdef_columns(s.oid)
            FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
            WHERE n.nspname = %(s)s ORDER BY 1""",
    }
    with psycopg.connect(dsn) as conn:
        return {
            name: [
                tuple(str(v).replace(schema + ".", "S.") for v in row)
                for row in conn.execute(sql, {"s": schema}).fetchall()
            ]
            for name, sql in queries.items()
        }


def test_migrations_produce_exactly_the_declared_schema(
    empty_schema: Database, server_dsn: str
) -> None:
    migrate.upgrade(empty_schema.dsn, empty_schema.schema)
    assert migrate.current(empty_schema.dsn, empty_schema.schema) == HEAD
    declared = empty_schema.schema + "_declared"
    try:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(schema_ddl(declared))
        migrated = catalog(server_dsn, empty_schema.schema)
        assert migrated["columns"] and migrated["indexes"] and migrated["enums"]
        assert migrated["statistics"]
        assert migrated == catalog(server_dsn, declared)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {declared} CASCADE")


def test_upgrade_is_idempotent_and_downgrade_leaves_nothing(empty_schema: Database) -> None:
    from psycopg.conninfo import conninfo_to_dict

    key_value_dsn = " ".join(f"{k}={v}" for k, v in conninfo_to_dict(empty_schema.dsn).items())
    migrate.upgrade(key_value_dsn, empty_schema.schema)  # libpq key=value DSNs work too
    migrate.upgrade(empty_schema.dsn, empty_schema.schema)
    migrate.downgrade(empty_schema.dsn, empty_schema.schema)
    assert migrate.current(empty_schema.dsn, empty_schema.schema) is None
    assert (
        empty_schema.scalar(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (empty_schema.schema,)
        )
        == 0
    )
    # And back up again after a full downgrade.
    migrate.upgrade(empty_schema.dsn, empty_schema.schema)
    assert empty_schema.scalar("SELECT count(*) FROM {schema}.tasks") == 0


def test_downgrade_to_the_first_revision_removes_the_operations_schema(
    empty_schema: Database,
) -> None:
    migrate.upgrade(empty_schema.dsn, empty_schema.schema)
    migrate.downgrade(empty_schema.dsn, empty_schema.schema, "pgqueue_0001")
    assert migrate.current(empty_schema.dsn, empty_schema.schema) == "pgqueue_0001"
    assert (
        empty_schema.scalar("SELECT to_regclass(%s)", (f"{empty_schema.schema}.throughput",))
        is None
    )
    columns = {
        row[0]
        for row in empty_schema.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'kinds'",
            (empty_schema.schema,),
        )
    }
    assert "paused_at" not in columns and "swept_at" in columns
    migrate.upgrade(empty_schema.dsn, empty_schema.schema)
    assert migrate.current(empty_schema.dsn, empty_schema.schema) == HEAD


def test_downgrade_below_the_audit_revision_drops_the_audit_log(empty_schema: Database) -> None:
    migrate.upgrade(empty_schema.dsn, empty_schema.schema)
    assert empty_schema.scalar("SELECT to_regclass(%s)", (f"{empty_schema.schema}.audit_log",))
    migrate.downgrade(empty_schema.dsn, empty_schema.schema, "pgqueue_0002")
    assert migrate.current(empty_schema.dsn, empty_schema.schema) == "pgqueue_0002"
    assert (
        empty_schema.scalar("SELECT to_regclass(%s)", (f"{empty_schema.schema}.audit_log",)) is None
    )
    assert empty_schema.scalar("SELECT to_regclass(%s)", (f"{empty_schema.schema}.throughput",))


def test_downgrade_to_the_second_revision_removes_flow_control(empty_schema: Database) -> None:
    migrate.upgrade(empty_schema.dsn, empty_schema.schema)
    empty_schema.fetch(
        "INSERT INTO {schema}.tasks (kind, attempts_left, max_attempts, priority, task_group)"
        " VALUES ('k', 1, 1, 5, 'g')"
    )
    migrate.downgrade(empty_schema.dsn, empty_schema.schema, "pgqueue_0002")
    assert migrate.current(empty_schema.dsn, empty_schema.schema) == "pgqueue_0002"
    for table in ("kind_limits", "group_buckets", "limit_changes"):
        name = f"{empty_schema.schema}.{table}"
        assert empty_schema.scalar("SELECT to_regclass(%s)", (name,)) is None, table
    columns = {
        row[0]
        for row in empty_schema.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'tasks'",
            (empty_schema.schema,),
        )
    }
    assert not columns & {"priority", "task_group", "holds_slot"}, columns
    assert empty_schema.scalar("SELECT count(*) FROM {schema}.tasks") == 1
    migrate.upgrade(empty_schema.dsn, empty_schema.schema)
    assert empty_schema.scalar("SELECT priority FROM {schema}.tasks") == 0


def test_cli_migrate_and_sql(empty_schema: Database) -> None:
    env = empty_schema.env()
    up = subprocess.run(
        [sys.executable, "-m", "pgqueue", "migrate"], env=env, capture_output=True, text=True
    )
    assert up.returncode == 0, up.stderr
    assert HEAD in up.stdout
    down = subprocess.run(
        [sys.executable, "-m", "pgqueue", "migrate", "--down"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert "at base" in down.stdout
    sql = subprocess.run(
        [sys.executable, "-m", "pgqueue", "sql", "--schema", "jobs"], capture_output=True, text=True
    )
    assert sql.returncode == 0
    assert "CREATE TABLE jobs.tasks" in sql.stdout and "__schema__" not in sql.stdout


def test_copied_revisions_run_in_a_host_alembic_project(
    empty_schema: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic import command
    from alembic.config import Config

    project = tmp_path / "alembic"
    config = Config(str(tmp_path / "alembic.ini"))
    command.init(config, str(project))
    config.set_main_option("script_location", str(project))
    config.set_main_option(
        "sqlalchemy.url", migrate.sqlalchemy_url(empty_schema.dsn).replace("%", "%%")
    )
    host_table = f"{empty_schema.schema}_host"
    (project / "versions" / "host_0001.py").write_text(
        f"""
from alembic import op
revision = "host_0001"
down_revision = None
branch_labels = ("host",)
depends_on = None
def upgrade():
    op.execute("CREATE TABLE {host_table} (id int)")
def downgrade():
    op.execute("DROP TABLE {host_table}")
"""
    )
    copied = migrate.copy_migrations(project / "versions")
    assert [p.name for p in copied] == [
        "pgqueue_0001_initial.py",
        "pgqueue_0002_operations.py",
        "pgqueue_0003_flow_control.py",
        "pgqueue_0004_audit.py",
        "pgqueue_0005_results.py",
        "pgqueue_0006_workflows.py",
        "pgqueue_0007_traces.py",
        "pgqueue_0008_blocked_counts.py",
    ]
    monkeypatch.setenv("PGQUEUE_SCHEMA", empty_schema.schema)
    version_table = f"{empty_schema.schema}_versions"
    env_py = (project / "env.py").read_text()
    env_py = env_py.replace(
        "target_metadata=target_metadata",
        f"target_metadata=target_metadata, version_table={version_table!r}",
    )
    (project / "env.py").write_text(env_py)
    try:
        command.upgrade(config, "heads")
        assert empty_schema.scalar("SELECT count(*) FROM {schema}.tasks") == 0
        assert empty_schema.scalar(f"SELECT count(*) FROM {host_table}") == 0
        heads = {row[0] for row in empty_schema.fetch(f"SELECT version_num FROM {version_table}")}
        assert heads == {"host_0001", HEAD}
    finally:
        empty_schema.fetch(f"DROP TABLE IF EXISTS {host_table}, {version_table}")


def test_downgrade_from_0005_keeps_one_row_per_key_and_drops_what_it_added(
    empty_schema: Database,
) -> None:
    migrate.upgrade(empty_schema.dsn, empty_schema.schema)
    empty_schema.fetch(
        "INSERT INTO {schema}.tasks (kind, external_key, status, attempts_left, max_attempts,"
        " key_while_active, result) VALUES"
        " ('k', 'a', 'succeeded', 0, 1, true, '1'), ('k', 'a', 'new', 1, 1, true, NULL),"
        " ('k', 'b', 'succeeded', 0, 1, false, '2')"
    )
    migrate.downgrade(empty_schema.dsn, empty_schema.schema, "pgqueue_0002")
    assert migrate.current(empty_schema.dsn, empty_schema.schema) == "pgqueue_0002"
    rows = empty_schema.fetch("SELECT external_key, status::text FROM {schema}.tasks ORDER BY id")
    assert rows == [(None, "succeeded"), ("a", "new"), ("b", "succeeded")]
    columns = {
        row[0]
        for row in empty_schema.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'tasks'",
            (empty_schema.schema,),
        )
    }
    assert not columns & {"result", "snoozes", "key_while_active"}
    assert (
        empty_schema.scalar("SELECT to_regclass(%s)", (f"{empty_schema.schema}.finished_results",))
        is None
    )
    migrate.upgrade(empty_schema.dsn, empty_schema.schema)
    assert migrate.current(empty_schema.dsn, empty_schema.schema) == HEAD


def test_downgrade_from_0006_cancels_blocked_nodes_and_rebuilds_the_status_type(
    empty_schema: Database,
) -> None:
    migrate.upgrade(empty_schema.dsn, empty_schema.schema)
    empty_schema.fetch(
        "INSERT INTO {schema}.tasks (kind, status, attempts_left, max_attempts, workflow_id,"
        " node) VALUES ('k', 'blocked', 1, 1, gen_random_uuid(), 'b'),"
        " ('k', 'new', 1, 1, NULL, NULL)"
    )
    migrate.downgrade(empty_schema.dsn, empty_schema.schema, "pgqueue_0005")
    rows = empty_schema.fetch("SELECT status::text FROM {schema}.tasks ORDER BY id")
    assert rows == [("cancelled",), ("new",)]
    labels = empty_schema.fetch(
        "SELECT e.enumlabel FROM pg_enum AS e JOIN pg_type AS t ON t.oid = e.enumtypid"
        " JOIN pg_namespace AS n ON n.oid = t.typnamespace"
        " WHERE n.nspname = %s AND t.typname = 'task_status' ORDER BY e.enumsortorder",
        (empty_schema.schema,),
    )
    assert [row[0] for row in labels] == [
        "new", "must_retry", "no_attempts_left", "cancelled", "succeeded",
    ]  # fmt: skip
    migrate.upgrade(empty_schema.dsn, empty_schema.schema)
    assert migrate.current(empty_schema.dsn, empty_schema.schema) == HEAD


def test_processes_that_migrate_at_once_take_turns(empty_schema: Database) -> None:
    """Worker processes started together each run ``pgqueue migrate``: they used to race on
    CREATE SCHEMA and the version table (a unique violation in one of them)."""
    import subprocess
    import sys

    script = (
        "import sys, time, pgqueue.migrate as m\n"
        "start = float(sys.argv[3])\n"
        "time.sleep(max(0.0, start - time.time()))  # all four begin at the same instant\n"
        "m.upgrade(sys.argv[1], sys.argv[2])\n"
    )
    start = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, empty_schema.dsn, empty_schema.schema, str(start)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    failures = [err for proc, err in zip(procs, errors, strict=True) if proc.returncode != 0]
    assert failures == []
    assert migrate.current(empty_schema.dsn, empty_schema.schema) == HEAD
