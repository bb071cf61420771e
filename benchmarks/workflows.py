"""Workflows under load, with real ``pgqueue worker`` processes on one database.

Usage: python benchmarks/workflows.py [--dsn URL] [--processes 4] [--nodes 10000]

Two runs, each on a fresh schema drained by ``--processes`` workers of
``benchmarks/flow_app.py`` (a handler that does nothing):

- ``plain``: ``--nodes`` tasks pushed alone;
- ``workflow``: one workflow of ``--nodes`` nodes: a root, ``--nodes - 2`` nodes after it
  (fan-out) and a last node after all of those (fan-in).

The drain rate is the number of tasks over the seconds from the first claim to the last
success (the database's ``started_at`` and ``finished_at``). The workflow's must be at least
30 % of the plain one; exits non-zero otherwise.
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

from pgqueue import KindOptions, Queue, Task, Workflow
from pgqueue.store.queries import schema_ddl

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def run(dsn: str, mode: str, processes: int, nodes: int) -> float:
    """Seconds from the first claim to the last success of one run."""
    schema = f"bench_wf_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema_ddl(schema))
    try:
        with Queue(dsn, schema=schema) as producer:
            producer.declare_kind("bench", KindOptions(attempt_timeout=30))
            if mode == "plain":
                for start in range(0, nodes, 1000):
                    producer.push_tasks(
                        [Task("bench", n) for n in range(start, min(nodes, start + 1000))]
                    )
            else:
                wf = Workflow()
                root = wf.add("root", Task("bench"))
                middle = [wf.add(f"n{i}", Task("bench"), after=[root]) for i in range(nodes - 2)]
                wf.add("last", Task("bench"), after=middle)
                producer.push_workflow(wf)
        env = {**os.environ, "PGQUEUE_DSN": dsn, "PGQUEUE_SCHEMA": schema,
               "MODE": "unlimited", "PYTHONPATH": str(ROOT / "benchmarks")}  # fmt: skip
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
        deadline = time.monotonic() + 900
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.monotonic() < deadline:
                (done,) = conn.execute(
                    f"SELECT count(*) FROM {schema}.tasks WHERE status = 'succeeded'"
                ).fetchone() or (0,)
                if done >= nodes:
                    break
                time.sleep(0.2)
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                worker.wait(60)
            row = conn.execute(
                f"SELECT count(*) FILTER (WHERE status = 'succeeded'),"
                f" extract(epoch FROM max(finished_at) - min(started_at))::float8"
                f" FROM {schema}.tasks"
            ).fetchone()
        assert row is not None and row[0] == nodes, f"{mode}: {row} of {nodes} succeeded"
        return float(row[1])
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=10_000)
    args = parser.parse_args()
    plain = args.nodes / run(args.dsn, "plain", args.processes, args.nodes)
    print(f"plain: {plain:,.0f} tasks/s ({args.processes} processes, {args.nodes:,} tasks)")
    workflow = args.nodes / run(args.dsn, "workflow", args.processes, args.nodes)
    ratio = workflow / plain
    print(f"workflow fan-out + fan-in of {args.nodes:,} nodes: {workflow:,.0f} tasks/s,"
          f" {ratio:.0%} of plain ({'ok' if ratio >= 0.3 else 'below 30 %'})")  # fmt: skip
    return 0 if ratio >= 0.3 else 1


if __name__ == "__main__":
    sys.exit(main())
