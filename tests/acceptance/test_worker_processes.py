"""Real ``pgqueue worker`` subprocesses: many tasks across processes, SIGKILL, SIGTERM drain."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pgqueue import KindOptions, Queue, Task
from tests.conftest import Database

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def start_worker(db: Database, log_dir: Path, mode: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pgqueue.cli", "worker", "tests.acceptance.worker_app:queue"],
        cwd=ROOT,
        env={**db.env(), "RUN_LOG_DIR": str(log_dir), "MODE": mode, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition held in another process (the database or a file)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def ran(log_dir: Path) -> list[tuple[int, int]]:
    rows = []
    for path in log_dir.glob("ran-*.log"):
        for line in path.read_text().splitlines():
            task_id, attempt = line.split()
            rows.append((int(task_id), int(attempt)))
    return rows


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> str:
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    return stderr.decode()


def test_ten_thousand_tasks_two_kinds_two_processes_each_run_once(
    db: Database, tmp_path: Path
) -> None:
    producer = Queue(db.dsn, schema=db.schema)
    for kind in ("alpha", "beta"):
        producer.declare_kind(kind, KindOptions(attempt_timeout=30))
    ids: list[int | None] = []
    for start in range(0, 10_000, 1000):
        ids += producer.push_tasks(
            [Task("alpha" if i % 2 else "beta", {"i": i}) for i in range(start, start + 1000)]
        )
    producer.close()
    assert None not in ids and len(set(ids)) == 10_000
    workers = [start_worker(db, tmp_path, "count") for _ in range(2)]
    try:
        wait_until(
            lambda: (
                db.scalar("SELECT count(*) FROM {schema}.tasks WHERE status = 'succeeded'")
                == 10_000
            ),
            120,
            "all tasks to succeed",
        )
    finally:
        logs = [stop(w) for w in workers]
    assert all(w.returncode == 0 for w in workers), logs
    runs = ran(tmp_path)
    counts = Counter(task_id for task_id, _ in runs)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, "a handler ran twice"
    assert len(list(tmp_path.glob("ran-*.log"))) == 2
    per_process = [len(p.read_text().splitlines()) for p in tmp_path.glob("ran-*.log")]
    assert all(n > 0 for n in per_process), per_process  # both processes took work
    assert db.scalar("SELECT count(*) FROM {schema}.tasks WHERE status <> 'succeeded'") == 0


def test_sigkill_mid_handler_loses_nothing(db: Database, tmp_path: Path) -> None:
    producer = Queue(db.dsn, schema=db.schema)
    producer.declare_kind("fragile", KindOptions(attempt_timeout=2, max_attempts=3))
    task_id = producer.push_task(Task("fragile", {"important": True}))
    producer.close()
    victim = start_worker(db, tmp_path, "crash", LEASE_MARGIN="1")
    wait_until(lambda: (tmp_path / "started").exists(), 30, "the first attempt to start")
    victim.kill()  # SIGKILL: no cleanup of any kind
    victim.communicate(timeout=10)
    assert (
        db.scalar("SELECT status::text FROM {schema}.tasks WHERE id = %s", (task_id,))
        == "must_retry"
    )
    survivor = start_worker(db, tmp_path, "crash", LEASE_MARGIN="1")
    try:
        wait_until(
            lambda: (
                db.scalar("SELECT status::text FROM {schema}.tasks WHERE id = %s", (task_id,))
                == "succeeded"
            ),
            30,
            "the task to be run again after its lease",
        )
    finally:
        stop(survivor)
    assert sorted(attempt for tid, attempt in ran(tmp_path) if tid == task_id) == [1, 2]
    assert db.scalar("SELECT attempts_elapsed FROM {schema}.tasks WHERE id = %s", (task_id,)) == 2


def test_sigterm_drains_and_exits_cleanly(db: Database, tmp_path: Path) -> None:
    worker = start_worker(db, tmp_path, "count")
    producer = Queue(db.dsn, schema=db.schema)
    producer.declare_kind("alpha", KindOptions(attempt_timeout=30))
    ids = producer.push_tasks([Task("alpha", i) for i in range(200)])
    producer.close()
    wait_until(lambda: len(ran(tmp_path)) >= 1, 30, "the worker to start working")
    stderr = stop(worker, signal.SIGTERM)
    assert worker.returncode == 0, stderr
    assert "stopped" in stderr
    # Whatever was claimed was finished and recorded; nothing is left leased.
    assert db.scalar("SELECT count(*) FROM {schema}.tasks WHERE claim_token IS NOT NULL") == 0
    assert db.scalar("SELECT count(*) FROM {schema}.tasks") == len(ids)
    done = db.scalar("SELECT count(*) FROM {schema}.tasks WHERE status = 'succeeded'")
    assert done == len({tid for tid, _ in ran(tmp_path)})
