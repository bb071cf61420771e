"""Flow control under load, with real ``pgqueue worker`` processes on one database.

Usage: python benchmarks/flow_control.py [--dsn URL] [--processes 4] [--tasks 20000]
       [--rate 1000] [--window 10] [--groups 1000] [--beside-rate 500]

Four runs, each on a fresh schema with ``--tasks`` due tasks and ``--processes`` workers of
``benchmarks/flow_app.py``:

- ``unlimited``: the drain rate (tasks / seconds from the first claim to the last);
- ``rate``: ``RateLimit(--rate, per=1)``: the claim rate over ``--window`` seconds after the
  first two (they hold the burst, which a loaded machine may take more than a second to start),
  which must be within 2 % of ``--rate``;
- ``group``: ``group_concurrency=1`` with the tasks spread over ``--groups`` groups: its drain
  rate, which must be at least half the unlimited one;
- ``beside``: the ``unlimited`` drain again, with a second kind in the same processes limited
  to ``RateLimit(--beside-rate, per=1)`` and a backlog of it larger than the run can drain (so
  its limiter is busy throughout; the unlimited tasks are pushed, all due at one instant, once
  the limited kind has been claimed for two seconds): the unlimited kind's drain rate, which
  must lose less than 5 % against the ``unlimited`` run, and the limited kind's start rate
  over the same seconds against its limit.

Claim times are the tasks' ``started_at`` (the database clock). Exits non-zero when a check
fails.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

from pgqueue import KindOptions, Queue, Task
from pgqueue.store.queries import schema_ddl

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def run(dsn: str, mode: str, processes: int, tasks: int, groups: int, rate: float,
        stop_after: int | None, limited: int = 0) -> dict[str, list[float]]:  # fmt: skip
    """Claim times (epoch seconds, sorted) of one run, by kind; it ends when ``stop_after`` (or
    all) of the ``bench`` tasks have been claimed.

    With ``limited`` tasks of the ``limited`` kind, those are pushed before the workers start
    and the ``bench`` ones only once the limited kind has been claimed for two seconds (its
    burst and one second at its rate), all due at one instant a little later: the unlimited
    drain runs entirely beside a limiter that is already holding claims back."""
    schema = f"bench_flow_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema_ddl(schema))
    try:
        with Queue(dsn, schema=schema) as producer:
            producer.declare_kind("bench", KindOptions(attempt_timeout=30))
            if limited:
                producer.declare_kind("limited", KindOptions(attempt_timeout=30))
            for start in range(0, limited, 1000):
                producer.push_tasks(
                    [Task("limited", n) for n in range(start, min(limited, start + 1000))]
                )
            if not limited:
                push_bench(producer, mode, tasks, groups, None)
        env = {**os.environ, "PGQUEUE_DSN": dsn, "PGQUEUE_SCHEMA": schema, "MODE": mode,
               "RATE": str(rate), "PYTHONPATH": str(ROOT / "benchmarks")}  # fmt: skip
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "pgqueue.cli", "worker", "flow_app:queue"],
                cwd=ROOT / "benchmarks",
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(processes)
        ]
        target = stop_after if stop_after is not None else tasks
        deadline = time.monotonic() + 600
        with psycopg.connect(dsn, autocommit=True) as conn:
            while limited and time.monotonic() < deadline:
                (started,) = conn.execute(
                    f"SELECT count(*) FROM {schema}.tasks"
                    " WHERE kind = 'limited' AND attempts_elapsed > 0"
                ).fetchone() or (0,)
                if started >= 2 * rate:
                    with Queue(dsn, schema=schema) as producer:
                        producer.declare_kind("bench", KindOptions(attempt_timeout=30))
                        push_bench(producer, mode, tasks, groups, time.time() + 1 + tasks / 5000)
                    break
                time.sleep(0.2)
            while time.monotonic() < deadline:
                (claimed,) = conn.execute(
                    f"SELECT count(*) FROM {schema}.tasks"
                    " WHERE kind = 'bench' AND attempts_elapsed > 0"
                ).fetchone() or (0,)
                if claimed >= target:
                    break
                time.sleep(0.2)
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                worker.wait(60)
            rows = conn.execute(
                f"SELECT kind, extract(epoch FROM started_at)::float8 FROM {schema}.tasks"
                " WHERE started_at IS NOT NULL ORDER BY 2"
            ).fetchall()
        times: dict[str, list[float]] = {"bench": [], "limited": []}
        for kind, started in rows:
            times[kind].append(started)
        return times
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def push_bench(producer: Queue, mode: str, tasks: int, groups: int, due: float | None) -> None:
    """The ``bench`` tasks, due now or (all of them) at ``due`` (epoch seconds)."""
    for start in range(0, tasks, 1000):
        delay = 0.0 if due is None else due - time.time()
        if due is not None and delay <= 0:
            print(f"  pushing the tasks took past their due time ({start:,} pushed by then)")
        producer.push_tasks(
            [Task("bench", n, group=f"g{n % groups}" if mode == "group" else None)
             for n in range(start, min(tasks, start + 1000))],
            delay=max(0.0, delay),
        )  # fmt: skip


def drain_rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--beside-rate", type=float, default=500.0)
    args = parser.parse_args()
    ok = True

    unlimited = drain_rate(
        run(args.dsn, "unlimited", args.processes, args.tasks, 1, 0, None)["bench"]
    )
    print(f"unlimited: {unlimited:,.0f} tasks/s ({args.processes} processes, {args.tasks:,})")

    needed = int(args.rate * (args.window + 4))
    times = run(args.dsn, "rate", args.processes, needed + 1000, 1, args.rate, needed)["bench"]
    start = times[0] + 2.0
    in_window = sum(1 for t in times if start <= t < start + args.window)
    measured = in_window / args.window
    within = abs(measured - args.rate) <= 0.02 * args.rate
    ok &= within
    print(f"rate {args.rate:,.0f}/s: {measured:,.1f}/s over {args.window}s after the first two"
          f" ({'ok' if within else 'outside 2 %'})")  # fmt: skip

    grouped = drain_rate(
        run(args.dsn, "group", args.processes, args.tasks, args.groups, 0, None)["bench"]
    )
    ratio = grouped / unlimited
    ok &= ratio >= 0.5
    print(f"group_concurrency=1 over {args.groups:,} groups: {grouped:,.0f} tasks/s,"
          f" {ratio:.0%} of unlimited ({'ok' if ratio >= 0.5 else 'below 50 %'})")  # fmt: skip

    # Four times the seconds the unlimited drain took, the lead before the bench tasks are due,
    # and 20 more, of the limited kind: its limiter has tasks to hold back until the end.
    backlog = int(args.beside_rate * (20 + 4 * args.tasks / unlimited + args.tasks / 5000))
    both = run(args.dsn, "beside", args.processes, args.tasks, 1, args.beside_rate, None, backlog)
    beside = drain_rate(both["bench"])
    share = beside / unlimited
    first, last = both["bench"][0], both["bench"][-1]
    held = [t for t in both["limited"] if first <= t < last]
    seconds = last - first
    achieved = len(held) / seconds if seconds > 0 else float("nan")
    busy = len(both["limited"]) < backlog
    beside_ok = share > 0.95 and busy
    ok &= beside_ok
    print(f"beside RateLimit({args.beside_rate:,.0f}/s): unlimited kind {beside:,.0f} tasks/s,"
          f" {share:.1%} of unlimited ({'ok' if share > 0.95 else 'lost 5 % or more'});"
          f" limited kind {achieved:,.1f}/s meanwhile"
          f" ({achieved / args.beside_rate:.1%} of its limit, over {seconds:.2f} s)"
          + ("" if busy else "; its backlog ran out: its limiter idled"))  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
