"""Fleet-scale benchmark of pgqueue: idle cost, latency with many kinds, delayed tasks, fairness.

    python benchmarks/fleet.py [--dsn URL] [--only idle,latency,delayed,fairness] [--quick]
                               [--baseline-path DIR] [--json FILE]

Workloads (each on a fresh database `bench_fleet_<pid>` on the server of --dsn, dropped after):

- `idle`: 1 and 10 worker processes with 500 registered kinds each and nothing to do. Counts the
  statements each process sends (round trips, counted inside the process by a wrapper around its
  executor) and the database's committed transactions (`pg_stat_database.xact_commit`, read
  after the processes exit so that their statistics are flushed) over a window after they
  settled, per second.
- `latency`: one idle worker process with 1 or 500 registered kinds; 300 tasks pushed one at a
  time at 50/s, spread over the kinds; push → handler start p50/p99 (`time.time()` taken right
  before the push call, and when the handler starts).
- `delayed`: one idle worker process; 200 tasks pushed at once with delays spread evenly over
  0.1-5 s; start lateness after the due time p50/p99 (the due time is `time.time()` right
  before the push plus the delay: the database's due time is up to a round trip later, so the
  figure errs late).
- `fairness`: one worker process, one kind with 100,000 due tasks and nine kinds with 100 each,
  all pushed before the worker starts; when each small kind's last task started, after the
  worker's start.

`--baseline-path DIR` runs the worker processes with another pgqueue source tree first on
`PYTHONPATH` (for a before/after comparison in one run; the schema must be the same).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR / "drivers"))

from pgconn import Db, create_database, drop_database, with_database  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SCHEMA = "pgqueue"
T = TypeVar("T")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def kind_names(count: int) -> list[str]:
    return [f"k{i}" for i in range(count)]


# --------------------------------------------------------------------------- worker process


class CountingExecutor:
    """Wraps the queue's executor and counts the statements (round trips) it sends."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.statements = 0

    async def open(self) -> None:
        await self.inner.open()

    async def run(self, op: Any) -> Any:
        from pgqueue.store.executor import Operation

        def steps() -> Any:
            inner = op.steps
            try:
                statement = next(inner)
                while True:
                    self.statements += 1
                    statement = inner.send((yield statement))
            except StopIteration as done:
                return done.value

        return await self.inner.run(Operation(steps(), op.transactional))

    async def run_in(self, tx: Any, op: Any) -> Any:
        return await self.inner.run_in(tx, op)

    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        return self.inner.listen(channel)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.inner.close()


async def worker_main(args: argparse.Namespace) -> None:
    from pgqueue import AsyncQueue, KindOptions
    from pgqueue.adapters.psycopg import AsyncPsycopgExecutor

    samples: list[float] = []
    per_kind: dict[str, list[float]] = {}  # kind -> [count, last start]

    async def handler(envelope: Any) -> None:
        now = time.time()
        payload = envelope.payload
        if isinstance(payload, dict):
            if "t" in payload:
                samples.append(now - payload["t"])
            elif "due" in payload:
                samples.append(now - payload["due"])
        entry = per_kind.setdefault(envelope.kind, [0, 0.0])
        entry[0] += 1
        entry[1] = now

    executor = CountingExecutor(AsyncPsycopgExecutor(args.dsn))
    queue = AsyncQueue(executor)
    options = KindOptions(worker_count=10, attempt_timeout=30.0, terminal_tasks_ttl=0)
    for kind in kind_names(args.kinds):
        queue.register_kind(kind, handler, options)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    started = time.time()
    await queue.start()
    print("ready", flush=True)
    marked, marked_at = 0, time.monotonic()
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "mark":
            marked, marked_at = executor.statements, time.monotonic()
        elif line in ("stop", ""):
            break
    window_statements = executor.statements - marked
    window = time.monotonic() - marked_at
    await queue.stop()
    await queue.close()
    print(
        json.dumps(
            {
                "statements": window_statements,
                "window": window,
                "samples": samples,
                "per_kind": {k: [v[0], v[1] - started] for k, v in per_kind.items()},
            }
        ),
        flush=True,
    )


# --------------------------------------------------------------------------- parent side


class Worker:
    """A worker process of this script, driven over stdin/stdout."""

    def __init__(self, dsn: str, kinds: int, baseline: str | None) -> None:
        env = dict(os.environ)
        if baseline:
            env["PYTHONPATH"] = baseline + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--role", "worker", "--dsn", dsn, "--kinds", str(kinds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"worker did not start: {line!r}")

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def finish(self) -> dict[str, Any]:
        """Stop the worker (unless already told to) and return its report."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.send("stop")
            self.proc.stdin.close()
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait(timeout=60)
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def fresh_database(server: str) -> str:
    import pgqueue.migrate

    name = f"bench_fleet_{os.getpid()}"
    await drop_database(server, name)
    await create_database(server, name)
    dsn = with_database(server, name)
    await asyncio.to_thread(pgqueue.migrate.upgrade, dsn)
    return dsn


async def wait_empty(dsn: str, condition: str = "true", timeout: float = 300.0) -> float:
    """Wait until no task row matching ``condition`` is left; return when (time.time())."""
    db = await Db.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = await db.scalar(f"SELECT count(*) FROM {SCHEMA}.tasks WHERE {condition}")
            if not left:
                return time.time()
            await asyncio.sleep(0.02)
        raise TimeoutError(f"tasks left after {timeout} s")
    finally:
        await db.close()


async def xact_commit(dsn: str, dbname: str) -> int:
    db = await Db.connect(dsn)
    try:
        return int(
            await db.scalar(f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{dbname}'")
        )
    finally:
        await db.close()


async def idle(server: str, processes: int, kinds: int, settle: float, window: float,
               baseline: str | None) -> dict[str, Any]:  # fmt: skip
    dsn = await fresh_database(server)
    dbname = dsn.rsplit("/", 1)[1]
    stats_dsn = with_database(server, "postgres")  # our own reads stay out of the count
    try:
        workers = [Worker(dsn, kinds, baseline) for _ in range(processes)]
        for worker in workers:
            worker.wait_ready()
        await asyncio.sleep(settle)
        before = await xact_commit(stats_dsn, dbname)
        for worker in workers:
            worker.send("mark")
        started = time.monotonic()
        await asyncio.sleep(window)
        elapsed = time.monotonic() - started
        for worker in workers:  # all at once: each one's window ends when it reads this
            worker.send("stop")
            assert worker.proc.stdin is not None
            worker.proc.stdin.close()
        results = [worker.finish() for worker in workers]
        await asyncio.sleep(1.5)  # exited backends have flushed their statistics
        after = await xact_commit(stats_dsn, dbname)
    finally:
        await drop_database(server, dbname)
    return {
        "processes": processes,
        "kinds": kinds,
        "window_s": round(elapsed, 1),
        "statements_per_s": round(sum(r["statements"] / r["window"] for r in results), 2),
        "xact_commit_per_s": round((after - before) / elapsed, 2),
    }


async def producer(dsn: str, kinds: int) -> Any:
    from pgqueue import AsyncQueue, KindOptions

    queue = AsyncQueue(dsn)
    options = KindOptions(worker_count=10, attempt_timeout=30.0, terminal_tasks_ttl=0)
    for kind in kind_names(kinds):
        queue.register_kind(kind, lambda e: None, options)
    return queue


async def latency(server: str, kinds: int, n: int, baseline: str | None) -> dict[str, Any]:
    from pgqueue import Task

    dsn = await fresh_database(server)
    try:
        worker = Worker(dsn, kinds, baseline)
        worker.wait_ready()
        await asyncio.sleep(1.0)
        queue = await producer(dsn, kinds)
        names = kind_names(kinds)
        interval = 1 / 50
        next_at = time.monotonic()
        for i in range(n):
            await queue.push_task(Task(names[i % kinds], {"t": time.time()}))
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await queue.close()
        await wait_empty(dsn)
        samples = [s * 1000 for s in worker.finish()["samples"]]
    finally:
        await drop_database(server, dsn.rsplit("/", 1)[1])
    return {
        "kinds": kinds,
        "n": len(samples),
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(percentile(samples, 0.99), 2),
        "max_ms": round(max(samples), 2),
    }


async def delayed(server: str, kinds: int, n: int, baseline: str | None) -> dict[str, Any]:
    from pgqueue import Task

    dsn = await fresh_database(server)
    try:
        worker = Worker(dsn, kinds, baseline)
        worker.wait_ready()
        await asyncio.sleep(1.0)
        queue = await producer(dsn, kinds)
        names = kind_names(kinds)
        delays = [0.1 + 4.9 * i / max(1, n - 1) for i in range(n)]
        random.Random(14).shuffle(delays)
        for i, delay in enumerate(delays):
            await queue.push_task(Task(names[i % kinds], {"due": time.time() + delay}), delay=delay)
        await queue.close()
        await wait_empty(dsn)
        samples = [s * 1000 for s in worker.finish()["samples"]]
    finally:
        await drop_database(server, dsn.rsplit("/", 1)[1])
    return {
        "kinds": kinds,
        "n": len(samples),
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(percentile(samples, 0.99), 2),
        "max_ms": round(max(samples), 2),
    }


async def fairness(server: str, big: int, small: int, baseline: str | None) -> dict[str, Any]:
    from pgqueue import Task

    dsn = await fresh_database(server)
    try:
        queue = await producer(dsn, 10)
        for start in range(0, big, 5000):
            await queue.push_tasks([Task("k0") for _ in range(min(5000, big - start))])
        for kind in kind_names(10)[1:]:
            await queue.push_tasks([Task(kind) for _ in range(small)])
        await queue.close()
        worker = Worker(dsn, 10, baseline)
        worker.wait_ready()
        await wait_empty(dsn, "kind <> 'k0'")
        db = await Db.connect(dsn)
        big_left = int(await db.scalar(f"SELECT count(*) FROM {SCHEMA}.tasks WHERE kind = 'k0'"))
        await db.close()
        per_kind = worker.finish()["per_kind"]
    finally:
        await drop_database(server, dsn.rsplit("/", 1)[1])
    finished = [per_kind[k][1] for k in kind_names(10)[1:]]
    return {
        "big": big,
        "small": small,
        "small_kinds_last_start_s": [round(s, 3) for s in finished],
        "slowest_small_kind_s": round(max(finished), 3),
        "big_kind_left_when_small_done": big_left,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    only = set(args.only.split(","))
    quick = args.quick
    report: dict[str, Any] = {}
    if "idle" in only:
        settle, window = (3.0, 5.0) if quick else (12.0, 20.0)
        report["idle"] = [
            await idle(args.dsn, p, 500, settle, window, args.baseline_path)
            for p in ((1,) if quick else map(int, args.idle_processes.split(",")))
        ]
        log(f"idle: {report['idle']}")
    if "latency" in only:
        n = 50 if quick else 300
        report["latency"] = [
            await latency(args.dsn, kinds, n, args.baseline_path) for kinds in (1, 500)
        ]
        log(f"latency: {report['latency']}")
    if "delayed" in only:
        report["delayed"] = [await delayed(args.dsn, 1, 50 if quick else 200, args.baseline_path)]
        log(f"delayed: {report['delayed']}")
    if "fairness" in only:
        big = 10_000 if quick else 100_000
        report["fairness"] = [await fairness(args.dsn, big, 100, args.baseline_path)]
        log(f"fairness: {report['fairness']}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--only", default="idle,latency,delayed,fairness")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline-path", help="pgqueue source tree for the worker processes")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--idle-processes", default="1,10", help="process counts for `idle`")
    parser.add_argument(
        "--role", choices=("main", "worker"), default="main", help=argparse.SUPPRESS
    )
    parser.add_argument("--kinds", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "worker":
        asyncio.run(worker_main(args))
        return
    report = asyncio.run(main_async(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
