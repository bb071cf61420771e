"""Flow control with real ``pgqueue worker`` processes: priorities, fleet-wide concurrency per
kind and per group, the fleet-wide rate limit (issue 21's acceptance)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pgqueue import KindOptions, Queue, Task
from tests.acceptance.test_worker_processes import stop, wait_until
from tests.conftest import Database

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def workers(
    db: Database, count: int, mode: str, **env: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` worker processes of ``flow_app``; drained (SIGTERM) and checked on exit."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "pgqueue.cli", "worker", "tests.acceptance.flow_app:queue"],
            cwd=ROOT,
            env={**db.env(), "MODE": mode, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(count)
    ]
    try:
        yield processes
    finally:
        logs = [stop(p) for p in processes]
    assert all(p.returncode == 0 for p in processes), logs


def push(db: Database, tasks: list[Task]) -> list[int | None]:
    with Queue(db.dsn, schema=db.schema) as producer:
        producer.declare_kind("flow", KindOptions(attempt_timeout=30))
        ids: list[int | None] = []
        for start in range(0, len(tasks), 1000):
            ids += producer.push_tasks(tasks[start : start + 1000])
    return ids


def succeeded(db: Database) -> int:
    return int(db.scalar("SELECT count(*) FROM {schema}.tasks WHERE status = 'succeeded'"))


def test_prioritised_tasks_overtake_a_backlog(db: Database) -> None:
    """10,000 tasks at priority 0, then 100 at 50: every priority-0 task claimed after the 100
    were pushed is claimed after each of them (batches claimed before may finish)."""
    push(db, [Task("flow", {"n": n}) for n in range(10_000)])
    with workers(db, 1, "priority", WORKERS="4", HOLD="0.002"):
        wait_until(lambda: succeeded(db) >= 300, 60, "the backlog to start draining")
        urgent = push(db, [Task("flow", {"n": n}, priority=50) for n in range(100)])
        pushed_at = db.scalar("SELECT now()")
        wait_until(
            lambda: db.scalar(
                "SELECT count(*) FROM {schema}.tasks WHERE priority = 50 AND status = 'succeeded'"
            ) == 100,
            60,
            "the urgent tasks to succeed",
        )  # fmt: skip
        left = db.scalar(
            "SELECT count(*) FROM {schema}.tasks WHERE priority = 0 AND status = 'new'"
        )
    assert left > 1000, "the backlog drained before the urgent tasks could overtake it"
    last_urgent = db.scalar(
        "SELECT max(started_at) FROM {schema}.tasks WHERE id = ANY(%s)", (urgent,)
    )
    overtaken = db.scalar(
        "SELECT count(*) FROM {schema}.tasks WHERE priority = 0 AND started_at > %s"
        " AND started_at < %s",
        (pushed_at, last_urgent),
    )
    later = db.scalar(
        "SELECT count(*) FROM {schema}.tasks WHERE priority = 0 AND started_at > %s",
        (pushed_at,),
    )
    assert later > 0  # the backlog kept being claimed after the push
    assert overtaken == 0, f"{overtaken} priority-0 claims after the push came before an urgent one"
    # Handlers started them in claim order too.
    first_plain_start = db.scalar(
        "SELECT min(r.started_at) FROM {schema}.runs r JOIN {schema}.tasks t ON t.id = r.task_id"
        " WHERE t.priority = 0 AND t.started_at > %s",
        (pushed_at,),
    )
    last_urgent_start = db.scalar(
        "SELECT max(started_at) FROM {schema}.runs WHERE task_id = ANY(%s)", (urgent,)
    )
    assert first_plain_start is None or last_urgent_start <= first_plain_start
