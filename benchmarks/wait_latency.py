"""Latency of ``queue.wait``: many concurrent waiters in one process, the worker in another.

Usage: python benchmarks/wait_latency.py [--dsn URL] [--waiters 1000] [--rate 500] [--ttl 86400]

The waiting process pushes ``--waiters`` tasks and waits on every one of them at once with
``AsyncQueue.wait``; a worker subprocess runs them, ``--rate`` tasks a second (0: as fast as it
can, one burst). A waiter's latency is the time from its task's success to its ``wait``
returning, measured two ways on the one clock of this machine:

- ``after commit``: from ``finished_at`` (the ``now()`` of the result statement's transaction,
  which commits a little later, so this is an upper bound of the latency after the commit);
- ``after return``: from the handler's return (it returns ``time.time()``), which adds the
  result writer's batching.

With ``--ttl 0`` the rows are deleted as they end, so only ``after return`` is measured. Prints
p50, p99 and max of each, and the number of LISTEN connections the waiters used; exits
non-zero when p99 after commit (after return with ``--ttl 0``) is over ``--p99-limit`` ms
(20 by default) or more than one LISTEN connection was used.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

import psycopg

from pgqueue import AsyncQueue, KindOptions, Task
from pgqueue.store.queries import schema_ddl

KIND = "timed"


def options(ttl: float, rate: float) -> KindOptions:
    return KindOptions(worker_count=20, attempt_timeout=30.0, terminal_tasks_ttl=ttl)


def run_worker(dsn: str, schema: str, ttl: float, rate: float, total: int) -> None:
    """The worker process: runs the tasks (paced at ``rate`` a second) until all are done."""

    async def main() -> None:
        started = time.monotonic()
        ran = 0
        done = asyncio.Event()

        async def timed(envelope: Any) -> float:
            nonlocal ran
            if rate > 0:
                slot = started + envelope.payload / rate
                await asyncio.sleep(max(0.0, slot - time.monotonic()))
            ran += 1
            if ran >= total:
                done.set()
            return time.time()

        async with AsyncQueue(dsn, schema=schema) as queue:
            queue.register_kind(KIND, timed, options(ttl, rate))
            await queue.start()
            await done.wait()

    asyncio.run(main())


def record_announcements(dsn: str, schema: str, path: str, ready: Any, stop: Any) -> None:
    """A bare LISTEN connection in a process of its own: when each announcement arrived."""
    with psycopg.connect(dsn, autocommit=True) as conn, open(path, "w") as out:
        conn.execute(f'LISTEN "pgqueue_{schema}_finished"')
        ready.set()
        while not stop.is_set():
            for notify in conn.notifies(timeout=0.2):
                out.write(f"{time.time()} {notify.payload}\n")


def announced_at(path: str) -> dict[int, float]:
    """Task id -> when a bare listener heard its announcement."""
    heard: dict[int, float] = {}
    with open(path) as lines:
        for line in lines:
            at, payload = line.split(" ", 1)
            if payload[:2] not in ("f:", "F:"):
                continue
            runs = payload[2:].strip()
            if payload.startswith("F:"):
                runs = runs.partition(":")[0]
            for run in runs.split(","):
                first, _, last = run[:-1].partition("-")
                for task_id in range(int(first), int(last or first) + 1):
                    heard.setdefault(task_id, float(at))
    return heard


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(dsn: str, schema: str, waiters: int, rate: float, ttl: float) -> dict[str, Any]:
    async with AsyncQueue(dsn, schema=schema) as queue:
        queue.declare_kind(KIND, options(ttl, rate))
        ids = await queue.push_tasks([Task(KIND, n) for n in range(waiters)])
        arrived: dict[int, float] = {}

        async def wait(task_id: int) -> Any:
            info = await queue.wait(task_id, timeout=120)
            arrived[task_id] = time.time()
            return info

        waits = [asyncio.ensure_future(wait(task_id)) for task_id in ids if task_id is not None]
        spawn = multiprocessing.get_context("spawn")
        ready, stop = spawn.Event(), spawn.Event()
        path = os.path.join(tempfile.gettempdir(), f"{schema}.announcements")
        recorder = spawn.Process(target=record_announcements, args=(dsn, schema, path, ready, stop))
        recorder.start()
        ready.wait(30)
        registry = None
        while registry is None or sum(w.seen is not None for w in registry.watches.values()) < len(
            waits
        ):  # every wait has marked and read its task
            await asyncio.sleep(0.05)
            registry = queue._waiters
        worker = spawn.Process(target=run_worker, args=(dsn, schema, ttl, rate, waiters))
        worker.start()
        infos = await asyncio.gather(*waits)
        worker.join(60)
        stop.set()
        recorder.join(10)
        heard = announced_at(path)
        os.unlink(path)
        assert queue._waiters is not None
        connections = queue._waiters.listener_connections
    after_return = [(arrived[i.id] - i.result) * 1000 for i in infos]
    after_commit = [
        (arrived[i.id] - i.finished_at.timestamp()) * 1000 for i in infos if i.finished_at
    ]
    after_heard = [(arrived[i.id] - heard[i.id]) * 1000 for i in infos if i.id in heard]
    return {
        "after_return": after_return,
        "after_commit": after_commit,
        "after_heard": after_heard,
        "listeners": connections,
    }


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: -"
    return (
        f"{name}: p50 {statistics.median(values):.1f} ms, p90 {percentile(values, 0.9):.1f} ms,"
        f" p99 {percentile(values, 0.99):.1f} ms,"
        f" max {max(values):.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500.0, help="tasks a second; 0: a burst")
    parser.add_argument("--ttl", type=float, default=86_400.0, help="terminal_tasks_ttl")
    parser.add_argument("--p99-limit", type=float, default=20.0, help="ms")
    args = parser.parse_args()
    schema = f"bench_wait_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(schema_ddl(schema))
    try:
        result = asyncio.run(measure(args.dsn, schema, args.waiters, args.rate, args.ttl))
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print(
        f"{args.waiters} waiters, rate {args.rate:g}/s, ttl {args.ttl:g}:"
        f" {result['listeners']} LISTEN connection(s)"
    )
    print("  " + summary("after commit", result["after_commit"]))
    print("  " + summary("after return", result["after_return"]))
    print("  " + summary("after a bare listener heard it", result["after_heard"]))
    judged = result["after_commit"] or result["after_return"]
    p99 = percentile(judged, 0.99)
    return 0 if p99 <= args.p99_limit and result["listeners"] == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
