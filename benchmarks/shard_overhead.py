"""Overhead of the sharded queue: drain a backlog with a plain ``AsyncQueue`` and with an
``AsyncShardedQueue`` of one shard on the same database, alternately, and compare.

Usage: python benchmarks/shard_overhead.py [--dsn URL] [--tasks 20000] [--rounds 15]

Each run pushes ``--tasks`` tasks (batches of 1000), starts the queue, and times the drain from
start until every result is written (TTL 0: finished rows are deleted). Prints each run, the
median per variant and the sharded/plain ratio per round (the two runs of a round are back to
back); exits non-zero when the median of those ratios says sharded is more than 10 % slower.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

import psycopg

from pgqueue import AsyncQueue, KindOptions, Task
from pgqueue.adapters.shards import AsyncShardedQueue
from pgqueue.events import Event, ResultsWritten
from pgqueue.store.queries import schema_ddl

KIND = "noop"


async def drain_once(dsn: str, tasks: int, sharded: bool) -> float:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema_ddl(schema))
    queue: Any = (
        AsyncShardedQueue([dsn], schema=schema) if sharded else AsyncQueue(dsn, schema=schema)
    )
    done = asyncio.Event()
    written = 0

    def count(event: Event) -> None:
        nonlocal written
        if isinstance(event, ResultsWritten):
            written += sum(1 for *_, applied in event.results if applied)
            if written >= tasks:
                done.set()

    async def noop(envelope: object) -> None:
        pass

    try:
        queue.register_kind(
            KIND, noop, KindOptions(worker_count=20, attempt_timeout=30.0, terminal_tasks_ttl=0)
        )
        queue.subscribe(count)
        for start in range(0, tasks, 1000):
            await queue.push_tasks([Task(KIND, n) for n in range(start, min(tasks, start + 1000))])
        began = time.perf_counter()
        await queue.start()
        await done.wait()
        elapsed = time.perf_counter() - began
        await queue.close()
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return elapsed


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    runs: dict[str, list[float]] = {"plain": [], "sharded": []}
    await drain_once(args.dsn, 2000, False)  # warm the server and the imports
    for round_ in range(args.rounds):
        for variant in ("plain", "sharded") if round_ % 2 == 0 else ("sharded", "plain"):
            seconds = await drain_once(args.dsn, args.tasks, variant == "sharded")
            runs[variant].append(seconds)
            print(
                f"round {round_ + 1} {variant:8} {seconds:6.2f}s "
                f"{args.tasks / seconds:8.0f} tasks/s"
            )
    plain = statistics.median(runs["plain"])
    sharded = statistics.median(runs["sharded"])
    # The decision uses the two runs of each round, back to back: the server's speed drifts
    # over a long run (checkpoints, autovacuum, the catalog of the dropped schemas), so pairs
    # compare like with like where medians over the whole run mix early and late runs.
    paired = statistics.median(s / p for s, p in zip(runs["sharded"], runs["plain"], strict=True))
    print(f"median plain   {plain:.2f}s ({args.tasks / plain:.0f} tasks/s)")
    print(f"median sharded {sharded:.2f}s ({args.tasks / sharded:.0f} tasks/s)")
    print(f"ratio of the medians: {sharded / plain:.3f}")
    print(f"sharded/plain drain time, median of the rounds' ratios: {paired:.3f} (limit 1.10)")
    return 0 if paired <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
