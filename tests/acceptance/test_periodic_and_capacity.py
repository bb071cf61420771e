"""Periodic tasks and capacity caps across several real processes."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from datetime import datetime
from pathlib import Path

import pytest

from pgqueue import CapacityExceeded, KindOptions, Queue, Task
from tests.acceptance.test_worker_processes import start_worker, stop
from tests.conftest import Database

# Fleets of worker processes: make test-fleet (and CI); kept out of the fast default tier.
pytestmark = [pytest.mark.slow, pytest.mark.fleet]


def test_periodic_three_processes_make_one_task_per_slot(db: Database, tmp_path: Path) -> None:
    workers = [start_worker(db, tmp_path, "periodic") for _ in range(3)]
    try:
        # Five one-second slots: at least 5 s of the three processes running together (a
        # fixed sleep once left fewer slots when the processes were slow to start).
        deadline = time.monotonic() + 60
        while db.scalar("SELECT count(*) FROM {schema}.tasks") < 5:
            assert time.monotonic() < deadline, "fewer than 5 periodic slots in 60 s"
            time.sleep(0.05)
    finally:
        logs = [stop(w) for w in workers]
    assert all(w.returncode == 0 for w in workers), logs
    rows = db.fetch("SELECT external_key, payload FROM {schema}.tasks ORDER BY external_key")
    keys = [key for key, _ in rows]
    assert len(keys) >= 5, keys
    assert len(set(keys)) == len(keys)
    slots = [datetime.fromisoformat(key.removeprefix("periodic:")) for key in keys]
    assert all((b - a).total_seconds() == 1 for a, b in itertools.pairwise(slots))
    assert all(payload == {"source": "schedule"} for _, payload in rows)


def test_periodic_missed_slots_run_once_on_start(db: Database, tmp_path: Path) -> None:
    db.fetch(
        "INSERT INTO {schema}.kinds (kind, periodic_slot)"
        " VALUES ('tick', now() - interval '1 hour')"
    )
    started = db.scalar("SELECT now()")
    worker = start_worker(db, tmp_path, "periodic")
    try:
        deadline = time.monotonic() + 20
        while db.scalar("SELECT count(*) FROM {schema}.tasks") == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        keys = [k for (k,) in db.fetch("SELECT external_key FROM {schema}.tasks ORDER BY id")]
    finally:
        stop(worker)
    # An hour of missed one-second slots yields one task (the latest slot), not 3 600. The
    # poll above may also catch the next slot's task if a second boundary passed meanwhile.
    slots = [datetime.fromisoformat(key.removeprefix("periodic:")) for key in keys]
    assert 1 <= len(slots) <= 2, keys
    assert all((slot - started).total_seconds() > -1 for slot in slots), (started, keys)
    assert all((b - a).total_seconds() == 1 for a, b in itertools.pairwise(slots)), keys


def push_fifty(dsn: str, schema: str, barrier: object) -> tuple[int, int]:
    queue = Queue(dsn, schema=schema, max_connections=1)
    queue.declare_kind("capped", KindOptions(attempt_timeout=5, max_pending=100))
    accepted = refused = 0
    barrier.wait()  # type: ignore[attr-defined]
    for _ in range(50):
        try:
            queue.push_task(Task("capped"))
            accepted += 1
        except CapacityExceeded:
            refused += 1
    queue.close()
    return accepted, refused


def test_capacity_is_exact_across_eight_processes(db: Database) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(8)
    with context.Pool(8) as pool:
        results = pool.starmap(push_fifty, [(db.dsn, db.schema, barrier)] * 8)
    assert sum(a for a, _ in results) == 100
    assert sum(r for _, r in results) == 300
    assert db.scalar("SELECT count(*) FROM {schema}.tasks") == 100
    queue = Queue(db.dsn, schema=db.schema)
    queue.declare_kind("capped", KindOptions(attempt_timeout=5, max_pending=100))
    with pytest.raises(CapacityExceeded):
        queue.push_tasks([Task("capped")])
    # Ten finish: exactly ten more fit, and a batch over the cap inserts nothing at all.
    db.fetch(
        "UPDATE {schema}.tasks SET status = 'succeeded', finished_at = now()"
        " WHERE id IN (SELECT id FROM {schema}.tasks ORDER BY id LIMIT 10)"
    )
    with pytest.raises(CapacityExceeded):
        queue.push_tasks([Task("capped")] * 11)
    assert db.scalar("SELECT count(*) FROM {schema}.tasks") == 100
    assert len(queue.push_tasks([Task("capped")] * 10)) == 10
    with pytest.raises(CapacityExceeded):
        queue.push_task(Task("capped"))
    queue.close()
