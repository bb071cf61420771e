"""The operator commands through the real ``pgqueue`` CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pgqueue import KindOptions, Queue, Task, Workflow
from tests.conftest import Database

ROOT = Path(__file__).resolve().parents[2]


def cli(db: Database, *args: str, dsn: str | None = None) -> subprocess.CompletedProcess[str]:
    env = db.env()
    if dsn is not None:
        env["PGQUEUE_DSN"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", *args],
        cwd=ROOT,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok_json(db: Database, *args: str) -> Any:
    done = cli(db, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def one_line_error(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


@pytest.fixture
def filled(db: Database) -> Database:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("mail", KindOptions(attempt_timeout=5))
        queue.push_tasks([Task("mail", {"n": i}, f"key-{i}") for i in range(3)])
        queue.push_tasks([Task("mail", {"bulk": i}) for i in range(600)])
    db.fetch(
        "UPDATE {schema}.tasks SET status = 'no_attempts_left', attempts_left = 0"
        " WHERE payload ? 'bulk'"
    )
    return db


def test_status_and_kinds(filled: Database) -> None:
    table = cli(filled, "status")
    assert table.returncode == 0, table.stderr
    assert "mail" in table.stdout and "no_attempts_left" in table.stdout
    (row,) = ok_json(filled, "status")
    assert row["kind"] == "mail" and row["paused"] is False
    assert row["counts"]["new"] == 3 and row["counts"]["no_attempts_left"] == 600
    assert row["counts"]["due"] == 3

    assert cli(filled, "kinds", "pause", "mail").stdout.strip() == "paused 'mail'"
    assert ok_json(filled, "kinds", "list")[0]["paused"] is True
    assert "yes" in cli(filled, "kinds", "list").stdout
    assert ok_json(filled, "kinds", "resume", "mail") == {"kind": "mail", "paused": False}
    assert ok_json(filled, "kinds", "list")[0]["paused"] is False


def test_status_and_kinds_list_show_blocked_workflow_nodes(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("mail", KindOptions(attempt_timeout=5))
        wf = Workflow()
        first = wf.add("first", Task("mail", 1))
        wf.add("second", Task("mail", 2), after=[first])
        queue.push_workflow(wf)
    (row,) = ok_json(db, "status")
    assert row["counts"]["blocked"] == 1
    assert row["counts"]["new"] == 1 and row["counts"]["due"] == 1
    table = cli(db, "status")
    assert table.returncode == 0, table.stderr
    header, mail = _table_row(table.stdout, "kind"), _table_row(table.stdout, "mail")
    assert mail[header.index("blocked")] == "1" and mail[header.index("new")] == "1"
    listed = cli(db, "kinds", "list")
    assert listed.returncode == 0, listed.stderr
    header, mail = _table_row(listed.stdout, "kind"), _table_row(listed.stdout, "mail")
    assert mail[header.index("blocked")] == "1" and mail[header.index("open")] == "1"


def _table_row(text: str, first: str) -> list[str]:
    """The cells of the table line whose first cell is ``first``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃|").split("│" if "│" in line else "┃")]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{text}")


def test_tasks_list_show_cancel_retry(filled: Database) -> None:
    page = ok_json(filled, "tasks", "list", "--kind", "mail", "--status", "new", "--limit", "2")
    assert [t["external_key"] for t in page] == ["key-2", "key-1"]
    rest = ok_json(filled, "tasks", "list", "--status", "new", "--before-id", str(page[-1]["id"]))
    assert [t["external_key"] for t in rest] == ["key-0"]
    listed = cli(filled, "tasks", "list", "--key-prefix", "key-", "--limit", "2")
    assert listed.returncode == 0 and "key-2" in listed.stdout
    assert f"--before-id {page[-1]['id']}" in listed.stdout

    shown = ok_json(filled, "tasks", "show", str(page[0]["id"]))
    assert shown["payload"] == {"n": 2} and shown["status"] == "new"
    assert shown["result"] is None
    assert "key-2" in cli(filled, "tasks", "show", str(page[0]["id"])).stdout
    filled.fetch(
        "UPDATE {schema}.tasks SET result = '{\"rows\": 42}' WHERE id = %s", (page[1]["id"],)
    )
    assert ok_json(filled, "tasks", "show", str(page[1]["id"]))["result"] == {"rows": 42}
    assert '{"rows": 42}' in cli(filled, "tasks", "show", str(page[1]["id"])).stdout

    assert ok_json(filled, "tasks", "cancel", "mail", "key-2")["cancelled"] is True
    again = cli(filled, "tasks", "cancel", "mail", "key-2")
    assert again.returncode == 0 and "no waiting or running task" in again.stdout
    assert ok_json(filled, "tasks", "show", str(page[0]["id"]))["status"] == "cancelled"

    retried = cli(filled, "tasks", "retry", "mail", "--limit", "550")
    assert retried.returncode == 0, retried.stderr
    assert "retried 550 task(s) of 'mail'" in retried.stdout
    assert ok_json(filled, "tasks", "retry", "mail") == {"kind": "mail", "retried": 50}
    assert filled.scalar("SELECT count(*) FROM {schema}.tasks WHERE status = 'must_retry'") == 600


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("tasks", "show", "abc"), "task id must be a positive integer, got 'abc'"),
        (("tasks", "show", "0"), "task id must be a positive integer"),
        (("tasks", "show", "987654321"), "no task with id 987654321"),
        (("tasks", "list", "--status", "bogus"), "status must be one of"),
        (("tasks", "list", "--limit", "0"), "limit must be an int from 1 to 1000"),
        (("tasks", "cancel", "nope", "k"), "kind 'nope' is unknown"),
        (("tasks", "retry", "nope"), "kind 'nope' is unknown"),
        (("kinds", "pause", "nope"), "kind 'nope' is unknown"),
        (("kinds", "resume", ""), "task kind must not be empty"),
    ],
)
def test_bad_input_is_one_line_and_a_failure(
    filled: Database, args: tuple[str, ...], expected: str
) -> None:
    one_line_error(cli(filled, *args), expected)


def test_bad_dsn_and_missing_schema(db: Database) -> None:
    one_line_error(
        cli(db, "status", dsn="postgresql://nobody@127.0.0.1:1/none"),
        "cannot connect to the database",
    )
    one_line_error(
        cli(db, "kinds", "list", "--schema", "no_such_schema"),
        "run `pgqueue migrate --schema no_such_schema`",
    )
    one_line_error(cli(db, "status", "--schema", "Bad-Name"), "schema name must match")


def test_cli_actions_are_audited_under_the_os_user(filled: Database) -> None:
    from pgqueue.audit import os_user

    assert cli(filled, "tasks", "cancel", "mail", "key-0").returncode == 0
    assert cli(filled, "kinds", "pause", "mail").returncode == 0
    assert cli(filled, "kinds", "resume", "mail").returncode == 0
    done = cli(filled, "tasks", "retry", "mail", "--limit", "700")
    assert done.returncode == 0, done.stderr
    limited = cli(filled, "kinds", "limit", "mail", "--concurrency", "3", "--group-rate", "5/m")
    assert limited.returncode == 0, limited.stderr
    entries = ok_json(filled, "audit")
    assert [(e["action"], e["kind"], e["rows"]) for e in reversed(entries)] == [
        ("cancel_task", "mail", 1),
        ("pause_kind", "mail", 1),
        ("resume_kind", "mail", 1),
        ("retry_kind", "mail", 600),  # one entry, though retried in chunks of 500
        ("set_limits", "mail", 1),
    ]
    assert {(e["source"], e["actor"]) for e in entries} == {("cli", os_user())}
    assert entries[-1]["detail"] == {"external_key": "key-0"}
    assert entries[0]["detail"]["global_concurrency"] == 3
    assert entries[0]["detail"]["group_rate_limit"] == {"n": 5, "per": 60.0, "burst": 5}
    assert entries[1]["detail"] == {"attempts": 1, "limit": 700}
    assert ok_json(filled, "audit", "--action", "pause_kind", "--limit", "1")[0]["rows"] == 1
    table = cli(filled, "audit", "--limit", "2")
    assert table.returncode == 0 and "retry_kind" in table.stdout and "next page" in table.stdout
    one_line_error(cli(filled, "audit", "--source", "web"), "--source must be one of")


def test_tasks_show_prints_a_nodes_parents_and_children(db: Database) -> None:
    from pgqueue import Workflow

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("mail", KindOptions(attempt_timeout=5))
        wf = Workflow()
        a = wf.add("charge", Task("mail"))
        b = wf.add("ship", Task("mail"), after=[a])
        wf.add("close", Task("mail"), after=[b])
        ids = queue.push_workflow(wf)
    shown = ok_json(db, "tasks", "show", str(ids["ship"]))
    assert shown["workflow_id"] == ids.workflow_id and shown["node"] == "ship"
    assert shown["parents"] == [{"id": ids["charge"], "node": "charge", "status": "new"}]
    assert shown["children"] == [{"id": ids["close"], "node": "close", "status": "blocked"}]
    text = cli(db, "tasks", "show", str(ids["ship"])).stdout
    assert f"charge (task {ids['charge']}, new)" in text
    assert f"close (task {ids['close']}, blocked)" in text
    plain = ok_json(db, "tasks", "show", str(ids["charge"]))
    assert plain["parents"] == []
