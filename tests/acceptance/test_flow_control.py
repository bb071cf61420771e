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

# Fleets of worker processes: make test-fleet (and CI); kept out of the fast default tier.
pytestmark = [pytest.mark.slow, pytest.mark.fleet]
ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def workers(
    db: Database, count: int, mode: str, **env: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` worker processes of ``flow_app``; drained (SIGTERM) and checked on exit."""
    db.fetch(
        "CREATE TABLE IF NOT EXISTS {schema}.runs (task_id bigint NOT NULL, pid int NOT NULL,"
        " task_group text, started_at timestamptz NOT NULL, ended_at timestamptz)"
    )
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
    # Handlers start in claim order; the four worker threads record their start with a few
    # milliseconds of jitter between them.
    first_plain_start = db.scalar(
        "SELECT min(r.started_at) FROM {schema}.runs r JOIN {schema}.tasks t ON t.id = r.task_id"
        " WHERE t.priority = 0 AND t.started_at > %s",
        (pushed_at,),
    )
    last_urgent_start = db.scalar(
        "SELECT max(started_at) FROM {schema}.runs WHERE task_id = ANY(%s)", (urgent,)
    )
    assert first_plain_start is not None
    assert (last_urgent_start - first_plain_start).total_seconds() < 0.05


def overlap(db: Database, group_by_group: bool = False) -> list[tuple[object, int]]:
    """Peak number of attempts running at once (per group, or overall) from the runs table."""
    partition = "PARTITION BY task_group" if group_by_group else ""
    rows = db.fetch(
        f"""SELECT task_group, max(running) FROM (
                SELECT task_group,
                       sum(delta) OVER ({partition} ORDER BY at, delta) AS running
                FROM (SELECT task_group, started_at AS at, 1 AS delta FROM {{schema}}.runs
                      UNION ALL
                      SELECT task_group, ended_at, -1 FROM {{schema}}.runs) AS edges
            ) AS levels
            GROUP BY task_group"""
        if group_by_group
        else """SELECT NULL, max(running)::int FROM (
                SELECT sum(delta) OVER (ORDER BY at, delta) AS running
                FROM (SELECT started_at AS at, 1 AS delta FROM {schema}.runs
                      UNION ALL
                      SELECT ended_at, -1 FROM {schema}.runs) AS edges
            ) AS levels"""
    )
    return [(group, int(peak)) for group, peak in rows]


def mean_overlap(db: Database) -> float:
    """Mean number of running attempts between the first start and the last start (while
    work remained)."""
    return float(
        db.scalar(
            """SELECT sum(extract(epoch FROM least(ended_at, last) - started_at))
                      / extract(epoch FROM max(last) - min(first))
               FROM {schema}.runs,
                    (SELECT min(started_at) AS first, max(started_at) AS last
                     FROM {schema}.runs) AS span
               WHERE started_at < last"""
        )
    )


def test_global_concurrency_holds_exactly_across_processes(db: Database) -> None:
    """global_concurrency=5, 4 processes x 10 workers, attempts of 0.5 s: never 6 running at
    once, and about 5 all along while work remains."""
    push(db, [Task("flow", {"n": n}) for n in range(60)])
    with workers(db, 4, "concurrency", WORKERS="10", HOLD="0.5"):
        wait_until(lambda: succeeded(db) == 60, 120, "all tasks to succeed")
    assert db.scalar("SELECT count(*) FROM {schema}.runs") == 60
    assert db.scalar("SELECT count(DISTINCT pid) FROM {schema}.runs") >= 2
    [(_, peak)] = overlap(db)
    mean = mean_overlap(db)
    print(f"global_concurrency=5: peak {peak}, mean {mean:.2f}")
    assert peak == 5
    assert mean >= 4.5, mean


def test_group_concurrency_one_runs_groups_in_parallel_not_in_series(db: Database) -> None:
    """400 tasks over 20 groups, group_concurrency=1, 4 processes: no two attempts of a group
    overlap, and the whole takes about 20 attempts in a row, not 400."""
    hold = 0.05
    push(db, [Task("flow", {"group": f"g{n % 20}"}, group=f"g{n % 20}") for n in range(400)])
    with workers(db, 4, "group", WORKERS="10", HOLD=str(hold)):
        wait_until(lambda: succeeded(db) == 400, 120, "all tasks to succeed")
    peaks = overlap(db, group_by_group=True)
    assert len(peaks) == 20
    assert all(peak == 1 for _, peak in peaks), peaks
    span = float(
        db.scalar("SELECT extract(epoch FROM max(ended_at) - min(started_at)) FROM {schema}.runs")
    )
    [(_, together)] = overlap(db)
    parallel, serial = 20 * hold, 400 * hold
    print(f"group_concurrency=1: {span:.2f}s for 400 tasks of {hold}s in 20 groups,"
          f" up to {together} groups at once")  # fmt: skip
    # Each group's 20 attempts in a row take 1 s, plus a result write and a claim between two
    # (a few ms each here, more on a loaded machine); all 400 in series would take 20 s.
    assert together >= 10, together
    assert parallel <= span < serial / 4, span


@pytest.mark.parametrize(
    ("tasks", "window", "skip"),
    [
        # Both run in the minutes tier, one test at a time: the busiest-second bound needs
        # the claim loops to wake on time, which a machine shared with the parallel default
        # tier cannot promise (late wake-ups let the bucket refill and then burst).
        pytest.param(800, 10, 1, id="10s", marks=pytest.mark.minutes),
        pytest.param(4000, 60, 1, id="60s", marks=pytest.mark.minutes),
    ],
)
def test_the_rate_limit_holds_fleet_wide(db: Database, tasks: int, window: int, skip: int) -> None:
    """RateLimit(50, per=1, burst=50), 8 processes x 8 workers: after the first second the
    start rate is 50/s within 5 %, no one-second window holds more than the burst plus a
    second's refill (see the bound below), and while
    held back each process sends only a few claims a second.

    Starts are the claims' times (``started_at``, the database clock when the claim took its
    tokens); each one's handler ran and recorded itself in ``runs``. The tasks are pushed once
    every process listens, so the whole fleet takes the first burst (a bucket left full while
    processes start would rightly let a second burst through)."""
    with workers(db, 8, "rate", WORKERS="8"):
        wait_until(lambda: listeners(db) == 8, 60, "eight listening processes")
        push(db, [Task("flow", {"n": n}) for n in range(tasks)])
        wait_until(
            lambda: db.scalar("SELECT count(*) FROM {schema}.runs") >= 50 * (window + skip + 1),
            window + 60,
            "the window to pass",
        )
    first = db.scalar("SELECT min(started_at) FROM {schema}.tasks")
    window_sql = (
        " started_at >= %(first)s + make_interval(secs => %(skip)s)"
        " AND started_at < %(first)s + make_interval(secs => %(skip)s + %(window)s)"
    )
    params = {"first": first, "skip": skip, "window": window}
    in_window = db.scalar("SELECT count(*) FROM {schema}.tasks WHERE" + window_sql, params)
    rate = in_window / window
    # Every claim's second: the claims in [its time, its time + 1 s).
    busiest = db.scalar(
        """SELECT max(n) FROM (
               SELECT (SELECT count(*) FROM {schema}.tasks AS o
                       WHERE o.started_at >= r.started_at
                         AND o.started_at < r.started_at + interval '1 second') AS n
               FROM {schema}.tasks AS r
               WHERE r.started_at >= %(first)s + interval '1 second'
                 AND r.started_at < %(first)s + make_interval(secs => %(skip)s + %(window)s)
           ) AS w""",
        params,
    )
    ran = db.scalar(
        "SELECT count(*) FROM {schema}.runs r JOIN {schema}.tasks t ON t.id = r.task_id"
        " WHERE" + window_sql.replace("started_at", "t.started_at"),
        params,
    )
    span = float(
        db.scalar(
            "SELECT extract(epoch FROM max(started_at) - min(started_at)) FROM {schema}.tasks"
        )
    )
    # Every limited claim updates the bucket row once; the workers have exited, so their
    # statistics are flushed.
    claims = db.scalar(
        "SELECT n_tup_upd FROM pg_stat_user_tables WHERE schemaname = %s"
        " AND relname = 'kind_limits'",
        (db.schema,),
    )
    per_process = claims / 8 / span
    print(f"rate: {rate:.2f}/s over {window}s, busiest second {busiest}, "
          f"{per_process:.1f} claims/s per process")  # fmt: skip
    assert 47.5 <= rate <= 52.5, rate
    # Decided in the database for the whole fleet: loops out of tokens reserve the next two
    # (RESERVE_SECONDS of the rate) in turn, so starts come in batches of two spaced evenly
    # and a second holds the rate plus one batch, plus what loops waking late bunch up (a
    # loop 100 ms late adds 5). Measured 52 to 56 on a 2-core machine loaded two and a half
    # times over its cores; a bucket per process would let 8 times the rate through.
    assert busiest <= 50 + 10, busiest
    assert ran == in_window  # each claimed attempt started its handler
    assert per_process <= 10, per_process
    assert db.scalar("SELECT count(*) FROM {schema}.tasks WHERE attempts_elapsed > 1") == 0


def listeners(db: Database) -> int:
    """Worker processes listening on this schema's channel."""
    return int(
        db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE %s",
            (f"%listen%pgqueue_{db.schema}%",),
        )
    )


def peak_after(db: Database, since: object) -> int:
    """Peak overlap of the attempts that started after ``since``."""
    return int(
        db.scalar(
            """SELECT coalesce(max(running), 0) FROM (
                   SELECT sum(delta) OVER (ORDER BY at, delta) AS running
                   FROM (SELECT started_at AS at, 1 AS delta FROM {schema}.runs
                         WHERE started_at > %(since)s
                         UNION ALL
                         SELECT coalesce(ended_at, 'infinity'), -1 FROM {schema}.runs
                         WHERE started_at > %(since)s) AS edges) AS levels""",
            {"since": since},
        )
    )


def started_after(db: Database, since: object) -> int:
    return int(db.scalar("SELECT count(*) FROM {schema}.runs WHERE started_at > %s", (since,)))


def cli(db: Database, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", *args], env=db.env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_live_override_takes_effect_within_a_second_and_clear_undoes_it(
    db: Database,
) -> None:
    """A running fleet of an unlimited kind: ``pgqueue kinds limit --concurrency 1`` holds
    every attempt started a second later to one at a time; ``--clear`` lifts it; audited."""
    push(db, [Task("flow", {"n": n}) for n in range(2000)])
    with workers(db, 2, "priority", WORKERS="4", HOLD="0.1"):
        wait_until(lambda: started_after(db, "-infinity") >= 40, 60, "the fleet to run")
        assert peak_after(db, "-infinity") > 1
        assert "max 1*" in cli(db, "kinds", "limit", "flow", "--concurrency", "1")
        limited_at = db.scalar("SELECT now() + interval '1 second'")
        wait_until(lambda: started_after(db, limited_at) >= 15, 30, "limited attempts")
        assert peak_after(db, limited_at) == 1
        assert "cleared" in cli(db, "kinds", "limit", "flow", "--clear")
        cleared_at = db.scalar("SELECT now() + interval '1 second'")
        wait_until(lambda: started_after(db, cleared_at) >= 40, 30, "unlimited attempts again")
        assert peak_after(db, cleared_at) > 1
    audit = db.fetch("SELECT actor, limits FROM {schema}.limit_changes ORDER BY id")
    assert [limits for _, limits in audit] == [
        {"global_concurrency": 1},
        {
            "rate_limit": None,
            "global_concurrency": None,
            "group_concurrency": None,
            "group_rate_limit": None,
        },
    ]
    assert all(actor and actor.startswith("cli:") for actor, _ in audit), audit
