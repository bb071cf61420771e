"""Memory check: one worker process drains a large backlog; its RSS must stay flat.

Usage: python benchmarks/memory.py [--dsn URL] [--tasks 1000000] [--workers 10]

Creates a fresh database ``bench_memory`` next to ``--dsn``, fills the backlog with one
``INSERT … SELECT generate_series`` (so the producer's memory is not the worker's), then runs a
worker subprocess (``AsyncQueue``, ``worker_count`` workers, TTL 0) that reports its RSS once a
second until the table is empty. Prints the peak RSS and the RSS at 10 % and at 100 % of the
drain; exits non-zero when the peak is 200 MB or more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

LIMIT_MB = 200.0
KIND = "noop"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def worker(dsn: str, workers: int) -> None:
    from pgqueue import AsyncQueue, KindOptions

    async def noop(envelope: object) -> None:
        return None

    queue = AsyncQueue(dsn)
    queue.register_kind(
        KIND, noop, KindOptions(attempt_timeout=30, worker_count=workers, terminal_tasks_ttl=0)
    )
    await queue.start()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            await asyncio.sleep(1)
            cur = await conn.execute(
                "SELECT count(*) FROM pgqueue.tasks WHERE kind = %s"
                " AND status IN ('new', 'must_retry')",
                (KIND,),
            )
            row = await cur.fetchone()
            left = int(row[0]) if row else 0
            print(json.dumps({"left": left, "rss_mb": round(rss_mb(), 1)}), flush=True)
            if left == 0:
                break
    await queue.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGQUEUE_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args.dsn, args.workers))
        return 0

    import pgqueue.migrate

    params = conninfo_to_dict(args.dsn)
    database = "bench_memory"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.execute(f"CREATE DATABASE {database}")
    dsn = make_conninfo(**{**params, "dbname": database})
    try:
        pgqueue.migrate.upgrade(dsn)
        started = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO pgqueue.tasks (kind, payload, attempts_left, max_attempts)"
                " SELECT %s, jsonb_build_object('n', g), 3, 3 FROM generate_series(1, %s) g",
                (KIND, args.tasks),
            )
            conn.execute("VACUUM ANALYZE pgqueue.tasks")
        print(f"backlog of {args.tasks:,} tasks in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--dsn", dsn, "--workers", str(args.workers)],
            stdout=subprocess.PIPE,
            text=True,
        )
        samples: list[tuple[int, float]] = []
        assert process.stdout is not None
        for line in process.stdout:
            sample = json.loads(line)
            samples.append((sample["left"], sample["rss_mb"]))
        process.wait()
        elapsed = time.perf_counter() - started
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database}")
    peak = max(rss for _, rss in samples)
    at_10 = next(rss for left, rss in samples if left <= args.tasks * 0.9)
    print(
        f"drained {args.tasks:,} tasks in {elapsed:.0f} s ({args.tasks / elapsed:,.0f}/s); "
        f"RSS at 10 %: {at_10:.1f} MB, at the end: {samples[-1][1]:.1f} MB, peak: {peak:.1f} MB"
    )
    if peak >= LIMIT_MB:
        print(f"FAIL: peak RSS {peak:.1f} MB is not under {LIMIT_MB:.0f} MB")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
