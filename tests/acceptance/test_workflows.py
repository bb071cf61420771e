"""Workflows with real ``pgqueue worker`` processes (issue 22's acceptance 1 to 5): a layered
DAG of 1,000 nodes, the fan-in race, cancellation with an all_ended callback, SIGKILL of a
worker mid-workflow. Orderings are read from the times the handlers recorded in the database."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import psycopg
import pytest

from pgqueue import KindOptions, Queue, Task, Workflow
from pgqueue.store.operations import WorkflowIds
from tests.acceptance.test_worker_processes import stop, wait_until
from tests.conftest import Database

# Fleets of worker processes: make test-fleet (and CI); kept out of the fast default tier.
pytestmark = [pytest.mark.slow, pytest.mark.fleet]
ROOT = Path(__file__).resolve().parents[2]


def start(db: Database, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pgqueue.cli", "worker", "tests.acceptance.workflow_app:queue"],
        cwd=ROOT,
        env={**db.env(), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@contextmanager
def workers(db: Database, count: int, **env: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` worker processes of ``workflow_app``; drained (SIGTERM) and checked on exit."""
    create_tables(db)
    processes = [start(db, **env) for _ in range(count)]
    try:
        yield processes
    finally:
        logs = [stop(p) for p in processes if p.poll() is None]
    assert all(p.returncode in (0, -9) for p in processes), logs


def create_tables(db: Database) -> None:
    db.fetch(
        "CREATE TABLE IF NOT EXISTS {schema}.runs (task_id bigint NOT NULL, pid int NOT NULL,"
        " started_at timestamptz NOT NULL, ended_at timestamptz)"
    )
    db.fetch(
        "CREATE TABLE IF NOT EXISTS {schema}.reports (task_id bigint NOT NULL,"
        " counts jsonb NOT NULL)"
    )


def producer(db: Database, max_attempts: int = 3) -> Queue:
    queue = Queue(db.dsn, schema=db.schema)
    for kind in ("node", "report"):
        queue.declare_kind(kind, KindOptions(attempt_timeout=30, max_attempts=max_attempts))
    return queue


def open_nodes(db: Database) -> int:
    return int(
        db.scalar(
            "SELECT count(*) FROM {schema}.tasks"
            " WHERE status IN ('new', 'must_retry', 'blocked')"
            "    OR (status = 'no_attempts_left' AND claim_token IS NOT NULL)"
        )
    )


def layered(layers: int, width: int, fan_in: int, seed: int, **payload: object) -> Workflow:
    rng = random.Random(seed)
    wf = Workflow()
    above: list[str] = []
    for layer in range(layers):
        names = [f"L{layer}N{i}" for i in range(width)]
        for name in names:
            after = rng.sample(above, fan_in) if above else []
            wf.add(name, Task("node", dict(payload)), after=after)
        above = names
    return wf


def assert_ran_after_parents(db: Database, ids: WorkflowIds) -> None:
    """Every edge: the child's first start is after the parent's last completed run ended (a
    run of a killed process never ends: it is not the one that succeeded)."""
    early = db.fetch(
        """SELECT c.id, p.id
           FROM {schema}.tasks AS c
           CROSS JOIN LATERAL unnest(c.parents) AS e(parent)
           JOIN {schema}.tasks AS p ON p.id = e.parent
           WHERE c.workflow_id = %s
             AND coalesce((SELECT min(started_at) FROM {schema}.runs WHERE task_id = c.id)
                          <= (SELECT max(ended_at) FROM {schema}.runs WHERE task_id = p.id),
                          true)""",
        (ids.workflow_id,),
    )
    assert early == [], f"children started before a parent ended: {early[:5]}"


@pytest.mark.minutes
def test_a_thousand_node_layered_dag_pushed_in_one_transaction_drained_by_three_processes(
    db: Database,
) -> None:
    """Acceptance 1: 10 layers of 100, each node after 3 random nodes of the layer above."""
    wf = layered(10, 100, 3, seed=22)
    create_tables(db)
    with producer(db) as queue, psycopg.connect(db.dsn) as conn:
        ids = queue.push_workflow_tx(conn, wf)
        conn.commit()
    assert len(ids) == 1000
    assert db.scalar("SELECT count(*) FROM {schema}.tasks WHERE status = 'blocked'") == 900
    began = time.monotonic()
    with workers(db, 3, WORKERS="8"):
        wait_until(lambda: open_nodes(db) == 0, 120, "the workflow to drain")
    elapsed = time.monotonic() - began
    assert db.fetch("SELECT status::text, count(*) FROM {schema}.tasks GROUP BY 1") == [
        ("succeeded", 1000)
    ]
    runs = db.fetch("SELECT task_id, count(*) FROM {schema}.runs GROUP BY 1 HAVING count(*) <> 1")
    assert runs == [], f"nodes that did not run exactly once: {runs[:5]}"
    assert db.scalar("SELECT count(DISTINCT task_id) FROM {schema}.runs") == 1000
    assert db.scalar("SELECT count(DISTINCT pid) FROM {schema}.runs") == 3
    assert_ran_after_parents(db, ids)
    # How the drain proceeds: per layer, when its first node started and its last ended.
    layers = db.fetch(
        """SELECT substring(t.node FROM '^L(\\d+)')::int AS layer,
                  extract(epoch FROM min(r.started_at) - (SELECT min(started_at)
                                                          FROM {schema}.runs))::float8,
                  extract(epoch FROM max(r.ended_at) - min(r.started_at))::float8
           FROM {schema}.tasks AS t JOIN {schema}.runs AS r ON r.task_id = t.id
           GROUP BY 1 ORDER BY 1"""
    )
    spans = ", ".join(f"L{layer} +{start:.2f}s ({span:.2f}s)" for layer, start, span in layers)
    print(f"1,000-node DAG drained in {elapsed:.1f}s (3 processes started within it); {spans}")


def fan_in(db: Database, queue: Queue, parents: int, lead: float) -> WorkflowIds:
    """A node after ``parents`` parents that all return at the same moment, ``lead`` seconds
    from now."""
    wf = Workflow()
    until = time.time() + lead
    members = [wf.add(f"p{i}", Task("node", {"until": until})) for i in range(parents)]
    wf.add("child", Task("node"), after=members)
    return queue.push_workflow(wf)


def ended(db: Database, task_id: int) -> bool:
    status = db.scalar("SELECT status::text FROM {schema}.tasks WHERE id = %s", (task_id,))
    return bool(status == "succeeded")


def run_fan_in_race(db: Database, repeats: int) -> None:
    with producer(db) as queue, workers(db, 4, WORKERS="16"):
        # Every process up and claiming before the race starts: warm-up tasks until each of
        # the four ran one (a process that starts late finds the first ones taken).
        deadline = time.monotonic() + 60
        while db.scalar("SELECT count(DISTINCT pid) FROM {schema}.runs") < 4:
            assert time.monotonic() < deadline, "the four workers did not all start"
            if open_nodes(db) == 0:
                queue.push_tasks([Task("node", {"hold": 0.2}) for _ in range(64)])
            time.sleep(0.05)
        wait_until(lambda: open_nodes(db) == 0, 60, "the warm-up tasks to end")
        spread = []
        for _ in range(repeats):
            ids = fan_in(db, queue, 50, lead=0.8)
            child = ids["child"]
            wait_until(partial(ended, db, child), 60, "the fan-in child to succeed")
            row = db.fetch(
                "SELECT attempts_elapsed, parents_pending, parents_failed,"
                " (SELECT count(*) FROM {schema}.runs WHERE task_id = t.id),"
                " (SELECT count(*) FROM jsonb_object_keys(t.parent_results))"
                " FROM {schema}.tasks AS t WHERE id = %s",
                (child,),
            )
            assert row == [(1, 0, 0, 1, 50)], row
            writers = db.scalar(
                "SELECT count(DISTINCT pid) FROM {schema}.runs WHERE task_id = ANY(%s)",
                ([v for k, v in ids.items() if k != "child"],),
            )
            spread.append(writers)
            assert writers >= 2, "the parents ran in one process: no race"
            assert_ran_after_parents(db, ids)
        print(f"processes running each fan-in's parents: {spread}")


def test_fan_in_race_releases_the_child_once(db: Database) -> None:
    """Acceptance 2 (default tier): 50 parents ending together in 4 processes, twice."""
    run_fan_in_race(db, 2)


@pytest.mark.minutes
def test_fan_in_race_released_once_a_hundred_times(db: Database) -> None:
    """Acceptance 2 in full: repeated 100 times."""
    run_fan_in_race(db, 100)


def test_an_exhausted_parent_cancels_dependents_transitively_and_releases_the_callback(
    db: Database,
) -> None:
    """Acceptance 3: a parent out of attempts cancels what needed its success, transitively;
    the all_ended callback still runs and counts the outcomes."""
    wf = Workflow()
    bad = wf.add("bad", Task("node", {"fail": True}))
    good = [wf.add(f"good{i}", Task("node")) for i in range(5)]
    mid = wf.add("mid", Task("node"), after=[bad, *good])
    low = wf.add("low", Task("node"), after=[mid])
    lowest = wf.add("lowest", Task("node"), after=[low, good[0]])
    wf.add("report", Task("report"), after=[bad, *good, mid, low, lowest], when="all_ended")
    create_tables(db)
    with producer(db, max_attempts=2) as queue:
        ids = queue.push_workflow(wf)
    with workers(db, 2, WORKERS="4"):
        wait_until(lambda: open_nodes(db) == 0, 60, "the workflow to end")
    rows = dict(
        db.fetch(
            "SELECT node, status::text FROM {schema}.tasks WHERE workflow_id = %s",
            (ids.workflow_id,),
        )
    )
    assert rows == {
        "bad": "no_attempts_left", **{f"good{i}": "succeeded" for i in range(5)},
        "mid": "cancelled", "low": "cancelled", "lowest": "cancelled", "report": "succeeded",
    }  # fmt: skip
    assert db.scalar("SELECT count(*) FROM {schema}.runs WHERE task_id = %s", (ids["bad"],)) == 2
    for name in ("mid", "low", "lowest"):
        assert db.scalar("SELECT count(*) FROM {schema}.runs WHERE task_id = %s", (ids[name],)) == 0
    messages = db.scalar("SELECT messages FROM {schema}.tasks WHERE id = %s", (ids["mid"],))
    assert messages == [f"cancelled: parent bad (task {ids['bad']}) failed with no attempts left"]
    assert db.fetch("SELECT counts FROM {schema}.reports") == [
        ({"succeeded": 5, "cancelled": 3, "no_attempts_left": 1},)
    ]


def test_sigkill_of_a_worker_mid_workflow(db: Database) -> None:
    """Acceptance 4: a worker killed mid-workflow; the workflow completes, nothing released
    twice (no node ran before its parents' last run ended; the survivors ran each node once)
    and nothing stranded."""
    wf = layered(6, 20, 2, seed=4, hold=0.05)
    create_tables(db)
    with producer(db) as queue:
        ids = queue.push_workflow(wf)
    with workers(db, 2, WORKERS="4", LEASE_MARGIN="1") as processes:
        wait_until(
            lambda: (
                db.scalar("SELECT count(DISTINCT pid) FROM {schema}.runs") == 2
                and db.scalar("SELECT count(*) FROM {schema}.runs") >= 30
            ),
            60,
            "both workers to make progress",
        )
        victim = processes[0]
        victim.kill()
        victim.communicate(timeout=10)
        processes.append(start(db, WORKERS="4", LEASE_MARGIN="1"))
        wait_until(lambda: open_nodes(db) == 0, 120, "the workflow to complete")
    assert db.fetch("SELECT status::text, count(*) FROM {schema}.tasks GROUP BY 1") == [
        ("succeeded", 120)
    ]
    assert db.scalar("SELECT count(*) FROM {schema}.tasks WHERE parents_pending <> 0") == 0
    twice = db.fetch(
        "SELECT task_id, count(*) FROM {schema}.runs WHERE pid <> %s GROUP BY 1"
        " HAVING count(*) > 1",
        (victim.pid,),
    )
    assert twice == [], f"survivors ran nodes more than once: {twice}"
    assert db.scalar("SELECT count(*) FROM {schema}.runs WHERE pid = %s", (victim.pid,)) > 0
    assert_ran_after_parents(db, ids)


def test_sigkill_during_last_attempts_strands_no_dependent(db: Database) -> None:
    """Acceptance 4, when the killed attempts were their nodes' last: the sweeper of the
    surviving worker ends them as out of attempts, so what needed them is cancelled and the
    all_ended callback runs with the counts."""
    wf = Workflow()
    slow = [wf.add(f"slow{i}", Task("node", {"hold": 30})) for i in range(4)]
    after = [wf.add(f"after{i}", Task("node"), after=[s]) for i, s in enumerate(slow)]
    wf.add("report", Task("report"), after=[*slow, *after], when="all_ended")
    create_tables(db)
    with producer(db, max_attempts=1) as queue:
        ids = queue.push_workflow(wf)
    env = {"WORKERS": "4", "LEASE_MARGIN": "1", "JANITOR_PERIOD": "0.5"}
    victim = start(db, **env)
    try:
        wait_until(
            lambda: db.scalar("SELECT count(*) FROM {schema}.runs") == 4, 60, "the slow nodes"
        )  # fmt: skip
    finally:
        victim.kill()
        victim.communicate(timeout=10)
    with workers(db, 1, **env):
        wait_until(lambda: open_nodes(db) == 0, 60, "the workflow to end")
    rows = dict(
        db.fetch(
            "SELECT node, status::text FROM {schema}.tasks WHERE workflow_id = %s",
            (ids.workflow_id,),
        )
    )
    assert rows == {
        **{f"slow{i}": "no_attempts_left" for i in range(4)},
        **{f"after{i}": "cancelled" for i in range(4)},
        "report": "succeeded",
    }
    assert db.fetch("SELECT counts FROM {schema}.reports") == [
        ({"succeeded": 0, "cancelled": 4, "no_attempts_left": 4},)
    ]
    assert db.scalar("SELECT count(*) FROM {schema}.runs") == 4  # the killed ones, not rerun


def test_push_workflow_tx_that_rolls_back_leaves_no_node(db: Database) -> None:
    """Acceptance 5, with the caller's transaction failing after the push."""
    wf = layered(3, 10, 2, seed=5)
    with (
        producer(db) as queue,
        pytest.raises(psycopg.errors.DivisionByZero),
        psycopg.connect(db.dsn) as conn,
    ):
        queue.push_workflow_tx(conn, wf)
        conn.execute("SELECT 1 / 0")
    assert db.scalar("SELECT count(*) FROM {schema}.tasks") == 0
