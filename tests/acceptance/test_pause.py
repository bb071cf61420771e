"""Pausing a kind across two real ``pgqueue worker`` processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgqueue import KindOptions, Queue, Task
from tests.acceptance.test_worker_processes import stop, wait_until
from tests.conftest import Database

# Fleets of worker processes: make test-fleet (and CI); kept out of the fast default tier.
pytestmark = [pytest.mark.slow, pytest.mark.fleet]
ROOT = Path(__file__).resolve().parents[2]


def start_worker(db: Database, log_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pgqueue.cli", "worker", "tests.acceptance.worker_app:queue"],
        cwd=ROOT,
        env={**db.env(), "RUN_LOG_DIR": str(log_dir), "MODE": "pause"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def read_logs(log_dir: Path) -> dict[str, list[list[str]]]:
    """Per worker log file: its lines split in fields."""
    return {
        path.name: [line.split() for line in path.read_text().splitlines() if line.strip()]
        for path in log_dir.glob("ran-*.log")
    }


def events(lines: list[list[str]], word: str) -> list[float]:
    return [float(fields[3]) for fields in lines if len(fields) == 4 and fields[2] == word]


def test_pause_stops_new_attempts_in_every_process_and_resume_restarts(
    db: Database, tmp_path: Path
) -> None:
    producer = Queue(db.dsn, schema=db.schema)
    producer.declare_kind("paced", KindOptions(attempt_timeout=10))
    ids = producer.push_tasks([Task("paced", i) for i in range(120)])
    workers = [start_worker(db, tmp_path) for _ in range(2)]
    try:
        wait_until(
            lambda: (
                all(len(events(lines, "start")) >= 3 for lines in read_logs(tmp_path).values())
                and len(read_logs(tmp_path)) == 2
            ),
            60,
            "both workers to run tasks",
        )
        producer.pause_kind("paced")
        wait_until(
            lambda: all(events(lines, "paused") for lines in read_logs(tmp_path).values()),
            10,
            "both workers to acknowledge the pause",
        )
        # Pushes still work while paused.
        late = producer.push_tasks([Task("paced", "late", f"late-{i}") for i in range(5)])
        assert None not in late
        # In-flight attempts finish: every start gets its end.
        wait_until(
            lambda: all(
                len(events(lines, "start")) == len(events(lines, "end"))
                for lines in read_logs(tmp_path).values()
            ),
            10,
            "in-flight attempts to finish",
        )
        # Two poll periods pass with nothing started (a missed flag would show up here).
        time.sleep(1.0)
        logs = read_logs(tmp_path)
        for lines in logs.values():
            paused_at = events(lines, "paused")[0]
            assert [t for t in events(lines, "start") if t > paused_at] == []
        started = sum(len(events(lines, "start")) for lines in logs.values())
        assert started < len(ids)
        assert db.scalar("SELECT count(*) FROM {schema}.tasks WHERE status = 'new'") >= 5
        assert (
            db.scalar("SELECT count(*) FROM {schema}.tasks WHERE claim_token IS NOT NULL") == 0
        )  # buffered claims were handed back
        kinds = producer.list_kinds()
        assert kinds[0].paused and kinds[0].counts["processing"] == 0

        producer.resume_kind("paced")
        wait_until(
            lambda: (
                db.scalar("SELECT count(*) FROM {schema}.tasks WHERE status = 'succeeded'")
                == len(ids) + len(late)
            ),
            60,
            "every task to succeed after resume",
        )
        logs = read_logs(tmp_path)
        assert all(events(lines, "resumed") for lines in logs.values())
    finally:
        outputs = [stop(w) for w in workers]
        producer.close()
    assert all(w.returncode == 0 for w in workers), outputs
    runs = [
        (fields[0], fields[1])
        for lines in read_logs(tmp_path).values()
        for fields in lines
        if fields[2] == "start"
    ]
    assert len(runs) == len(set(runs)) == len(ids) + len(late)  # each task ran once
