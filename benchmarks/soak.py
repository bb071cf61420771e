"""Soak: push at a fixed rate while workers drain, for minutes, and watch what grows.

Usage: python benchmarks/soak.py [--minutes 20] [--rate 5000] [--ttl 0] [--workers 1]
       [--pin-at 120 --pin-seconds 300] [--limited-rate 0] [--dsn URL] [--check]
       [--out-dir docs/images]

Without ``--dsn`` it starts a PostgreSQL cluster of its own with stock settings (initdb with
the ``pgserver`` wheel's binaries: autovacuum on, fsync on, default memory) on a free loopback
port, and deletes it afterwards. The producer pushes batches of 50 on a fixed schedule; worker
subprocesses (``--workers``, ``worker_count=16`` each, retention TTL ``--ttl``) run a handler
that records how long each task waited from its push to its start. Every 10 s the run samples:

- push→start latency p50 / p99 (from the workers), claim statement time p50 / p99 (timed in the
  workers around the claim statement itself);
- lag (the age of the oldest due, unclaimed task) and the tasks pushed and started;
- dead and live rows of the tasks table, the table's size and each index's size.

``--pin-at S --pin-seconds N`` holds a ``REPEATABLE READ`` transaction (one ``SELECT``, then
idle) open from second S for N seconds: it pins the MVCC horizon, so vacuum removes nothing.

``--limited-rate R`` adds a second kind, ``soak_limited``, to the worker processes with
``RateLimit(R, per=1)``, which the producer pushes at exactly R tasks/s (in batches of R/20, at
most 50): nothing backs up, but every claim of it goes through the limiter. Its pushed and
started rates, latency and lag are sampled and summarised apart from the unlimited kind's.

It writes ``soak-<label>.json`` and ``soak-<label>.png`` (the series over time) into
``--out-dir`` and prints a summary. With ``--check`` it exits 1 when, after ``--warmup``
seconds, the lag exceeds ``--max-lag``, the limited kind's lag exceeds ``--max-limited-lag``
(default: ``--max-lag`` and one second more, for a second's worth of its limit) or the table
with its indexes grows past ``--max-growth`` of its largest size in the warm-up, which should
be longer than one autovacuum cycle (the CI smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stock_cluster import stock_server

ROOT = Path(__file__).resolve().parents[1]
KIND = "soak"
LIMITED = "soak_limited"
BATCH = 50
SAMPLE_SECONDS = 10.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- worker subprocess ---------------------------------------------------------------------


class ClaimTimer:
    """An executor around the queue's own that times the claim statement of each claim."""

    def __init__(self, inner: Any, claim_sql: str) -> None:
        self.inner = inner
        self.claim_sql = claim_sql
        self.seconds: list[float] = []

    async def open(self) -> None:
        await self.inner.open()

    async def run(self, op: Any) -> Any:
        from pgqueue.store.executor import Operation

        inner_steps = op.steps
        timer = self

        def steps() -> Any:
            statement = next(inner_steps)
            while True:
                started = time.perf_counter()
                rows = yield statement
                if statement.sql == timer.claim_sql:
                    timer.seconds.append(time.perf_counter() - started)
                try:
                    statement = inner_steps.send(rows)
                except StopIteration as done:
                    return done.value

        return await self.inner.run(Operation(steps(), op.transactional, op.readonly))

    def listen(self, channel: str) -> Any:
        return self.inner.listen(channel)

    async def close(self) -> None:
        await self.inner.close()


async def worker_main(dsn: str, ttl: float, worker_count: int, limited_rate: float) -> None:
    from pgqueue import AsyncQueue, KindOptions, RateLimit
    from pgqueue.adapters.psycopg import AsyncPsycopgExecutor
    from pgqueue.store.queries import Queries

    claim_sql = Queries("pgqueue")["claim_due_tasks"]
    timer = ClaimTimer(AsyncPsycopgExecutor(dsn, max_size=4), claim_sql)
    waits: list[float] = []
    limited_waits: list[float] = []

    async def handler(envelope: Any) -> None:
        waits.append(time.time() - envelope.payload["t"])

    async def limited_handler(envelope: Any) -> None:
        limited_waits.append(time.time() - envelope.payload["t"])

    queue = AsyncQueue(timer)
    queue.register_kind(
        KIND,
        handler,
        KindOptions(attempt_timeout=30, worker_count=worker_count, terminal_tasks_ttl=ttl),
    )
    if limited_rate:
        queue.register_kind(
            LIMITED,
            limited_handler,
            KindOptions(
                attempt_timeout=30,
                worker_count=worker_count,
                terminal_tasks_ttl=ttl,
                rate_limit=RateLimit(limited_rate, per=1.0),
            ),
        )
    await queue.start()
    print(json.dumps({"ready": True}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), stop.set)  # the parent closes stdin to stop us
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
        batch, waits[:] = list(waits), []
        limited, limited_waits[:] = list(limited_waits), []
        claims, timer.seconds[:] = list(timer.seconds), []
        print(json.dumps({"started": len(batch), "waits": batch[:: max(1, len(batch) // 2000)],
                          "limited_started": len(limited),
                          "limited_waits": limited[:: max(1, len(limited) // 2000)],
                          "claims": len(claims), "claim_seconds": claims}), flush=True)  # fmt: skip
    await queue.close()


# --- the run --------------------------------------------------------------------------------


class Worker:
    def __init__(self, dsn: str, ttl: float, worker_count: int, limited_rate: float) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--role",
                "worker",
                "--dsn",
                dsn,
                "--ttl",
                str(ttl),
                "--worker-count",
                str(worker_count),
                "--limited-rate",
                str(limited_rate),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def pump(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.to_thread(self.proc.stdout.readline)
            if not line:
                return
            await self.lines.put(json.loads(line))

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.close()
        self.proc.wait(60)


async def produce(
    dsn: str, rate: float, until: float, pushed: list[int], kind: str = KIND, batch: int = BATCH
) -> None:
    from pgqueue import AsyncQueue, KindOptions, Task

    queue = AsyncQueue(dsn)
    queue.declare_kind(kind, KindOptions(attempt_timeout=30))
    interval = batch / rate
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    async with queue:
        while loop.time() < until:
            stamp = time.time()
            await queue.push_tasks([Task(kind, {"t": stamp}) for _ in range(batch)])
            pushed[0] += batch
            next_at += interval
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)


async def pin_horizon(dsn: str, at: float, seconds: float, log: list[str]) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, at - loop.time()))
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await conn.execute("SELECT count(*) FROM pgqueue.kinds")  # takes the snapshot
        log.append(f"horizon pinned for {seconds:.0f} s")
        await asyncio.sleep(seconds)
        await conn.rollback()
    log.append("horizon released")


LAG_SQL = """
SELECT coalesce(extract(epoch FROM now() - min(delayed_till)), 0)::float8 FROM pgqueue.tasks
WHERE kind = %s AND status IN ('new', 'must_retry') AND delayed_till <= now()
"""

TABLE_SQL = """
SELECT coalesce(s.n_dead_tup, 0), coalesce(s.n_live_tup, 0), pg_relation_size(c.oid),
       pg_total_relation_size(c.oid),
       (SELECT json_object_agg(i.indexrelid::regclass::text, pg_relation_size(i.indexrelid))
        FROM pg_index AS i WHERE i.indrelid = c.oid)
FROM pg_class AS c LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid = 'pgqueue.tasks'::regclass
"""


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="pgqueue-soak-") as scratch:
        server = None if args.dsn else stock_server(Path(scratch), "soak")
        dsn = args.dsn or server.dsn  # type: ignore[union-attr]
        try:
            return await soak(args, dsn)
        finally:
            if server is not None:
                server.ensure_stopped()


async def soak(args: argparse.Namespace, dsn: str) -> int:
    from pgqueue.store.queries import schema_ddl

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS pgqueue CASCADE")
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN"
            " ('autovacuum', 'fsync', 'shared_buffers', 'server_version')").fetchall())  # fmt: skip
        conn.execute(schema_ddl("pgqueue"))
    beside = f" and {args.limited_rate:g}/s of a kind limited to it" if args.limited_rate else ""
    print(f"soak: {args.minutes:g} min at {args.rate:g} tasks/s{beside}, TTL {args.ttl:g} s, "
          f"{args.workers} worker process(es); server {settings}", flush=True)  # fmt: skip
    workers = [
        Worker(dsn, args.ttl, args.worker_count, args.limited_rate) for _ in range(args.workers)
    ]
    pumps = [asyncio.create_task(w.pump()) for w in workers]
    for worker in workers:
        await asyncio.wait_for(worker.lines.get(), 60)  # ready
    loop = asyncio.get_running_loop()
    start = loop.time()
    until = start + args.minutes * 60
    pushed = [0]
    limited_pushed = [0]
    events: list[str] = []
    background = [asyncio.create_task(produce(dsn, args.rate, until, pushed))]
    if args.limited_rate:
        batch = max(1, min(BATCH, round(args.limited_rate / 20)))
        background.append(asyncio.create_task(
            produce(dsn, args.limited_rate, until, limited_pushed, LIMITED, batch)))  # fmt: skip
    if args.pin_seconds:
        background.append(
            asyncio.create_task(pin_horizon(dsn, start + args.pin_at, args.pin_seconds, events))
        )
    samples: list[dict[str, Any]] = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        last_pushed = last_limited_pushed = 0
        while loop.time() < until:
            await asyncio.sleep(SAMPLE_SECONDS)
            waits: list[float] = []
            limited_waits: list[float] = []
            claim_seconds: list[float] = []
            started = limited_started = 0
            for worker in workers:
                report = await asyncio.wait_for(worker.lines.get(), 3 * SAMPLE_SECONDS)
                waits += report["waits"]
                claim_seconds += report["claim_seconds"]
                started += report["started"]
                limited_waits += report["limited_waits"]
                limited_started += report["limited_started"]
            dead, live, heap, total, indexes = await (await conn.execute(TABLE_SQL)).fetchone()  # type: ignore[misc]
            lags = {}
            for kind in (KIND, LIMITED) if args.limited_rate else (KIND,):
                lag_row = await (await conn.execute(LAG_SQL, (kind,))).fetchone()
                lags[kind] = float(lag_row[0]) if lag_row else 0.0
            sample = {
                "t": round(loop.time() - start, 1),
                "pushed_per_s": (pushed[0] - last_pushed) / SAMPLE_SECONDS,
                "started_per_s": started / SAMPLE_SECONDS,
                "latency_p50_ms": 1000 * percentile(waits, 0.50),
                "latency_p99_ms": 1000 * percentile(waits, 0.99),
                "claim_p50_ms": 1000 * percentile(claim_seconds, 0.50),
                "claim_p99_ms": 1000 * percentile(claim_seconds, 0.99),
                "lag_s": lags[KIND],
                "dead_rows": int(dead),
                "live_rows": int(live),
                "table_bytes": int(heap),
                "total_bytes": int(total),
                "index_bytes": indexes or {},
                "events": list(events),
            }
            if args.limited_rate:
                sample["limited"] = {
                    "pushed_per_s": (limited_pushed[0] - last_limited_pushed) / SAMPLE_SECONDS,
                    "started_per_s": limited_started / SAMPLE_SECONDS,
                    "latency_p50_ms": 1000 * percentile(limited_waits, 0.50),
                    "latency_p99_ms": 1000 * percentile(limited_waits, 0.99),
                    "lag_s": lags[LIMITED],
                }
            events.clear()
            last_pushed = pushed[0]
            last_limited_pushed = limited_pushed[0]
            samples.append(sample)
            print(json.dumps({k: v for k, v in sample.items() if k != "index_bytes"}), flush=True)
    await asyncio.gather(*background)
    for worker in workers:
        worker.stop()
    await asyncio.gather(*pumps)
    return report_and_check(args, settings, samples)


def pin_windows(samples: list[dict[str, Any]], at: float, seconds: float) -> dict[str, Any]:
    """The minute before the pin, the pin, and what follows the minute after its release (the
    recovery the acceptance allows): rates, lag and claim times of each, and the claim time and
    drain rate after the recovery minute as a ratio of the minute before."""
    released = at + seconds
    windows = {
        "before": [s for s in samples if at - 60 < s["t"] <= at],
        "pinned": [s for s in samples if at < s["t"] <= released],
        "after_recovery_minute": [s for s in samples if s["t"] > released + 60],
    }

    def describe(window: list[dict[str, Any]]) -> dict[str, Any] | None:
        if not window:
            return None
        return {
            "samples": len(window),
            "pushed_per_s_mean": statistics.fmean(s["pushed_per_s"] for s in window),
            "started_per_s_mean": statistics.fmean(s["started_per_s"] for s in window),
            "lag_s_max": max(s["lag_s"] for s in window),
            "claim_p50_ms_median": statistics.median(s["claim_p50_ms"] for s in window),
            "claim_p99_ms_max": max(s["claim_p99_ms"] for s in window),
            "latency_p99_ms_max": max(s["latency_p99_ms"] for s in window),
        }

    found: dict[str, Any] = {name: describe(window) for name, window in windows.items()}
    before, after = found["before"], found["after_recovery_minute"]
    if before and after:
        found["after_over_before"] = {
            "started_per_s": after["started_per_s_mean"] / before["started_per_s_mean"],
            "claim_p50_ms": after["claim_p50_ms_median"] / before["claim_p50_ms_median"],
        }
    return found


def size_baseline(samples: list[dict[str, Any]], warmup: float) -> int:
    """The largest size of table and indexes up to the end of the warm-up.

    With autovacuum on, a queue table's size is a saw: it grows by the rows one vacuum cycle
    leaves dead (``autovacuum_naptime``, a minute by default) and falls back when vacuum
    truncates its empty tail. A warm-up longer than one cycle holds one tooth, so its peak is the
    size the table reaches when vacuum keeps up. One sample would land anywhere on the saw: just
    after a truncation it is a few percent of the peak, and the next tooth looks like growth.
    """
    during = [s["total_bytes"] for s in samples if s["t"] <= warmup]
    return max(during, default=samples[0]["total_bytes"])


def size_growth_failure(
    samples: list[dict[str, Any]], warmup: float, max_growth: float
) -> str | None:
    """Why the size grew without bound after the warm-up, or None when it stayed bounded."""
    after = [s["total_bytes"] for s in samples if s["t"] > warmup]
    if not after:
        return None
    baseline = size_baseline(samples, warmup)
    if max(after) <= baseline * (1 + max_growth):
        return None
    return (
        f"table and indexes grew to {max(after):,} bytes after the warm-up, past its peak of "
        f"{baseline:,} bytes in the warm-up (limit +{max_growth:.0%})"
    )


def report_and_check(
    args: argparse.Namespace, settings: dict[str, str], samples: list[dict[str, Any]]
) -> int:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    label = args.label or f"{args.rate:g}-ttl{args.ttl:g}" + (
        f"-pin{args.pin_seconds:g}" if args.pin_seconds else ""
    ) + (f"-lim{args.limited_rate:g}" if args.limited_rate else "")
    after = [s for s in samples if s["t"] > args.warmup]
    at_warmup = next((s for s in samples if s["t"] >= args.warmup), samples[0])
    warmup_peak = size_baseline(samples, args.warmup)
    summary = {
        "minutes": args.minutes,
        "rate": args.rate,
        "ttl": args.ttl,
        "workers": args.workers,
        "server": settings,
        "after_warmup": {
            "latency_p99_ms_max": max((s["latency_p99_ms"] for s in after), default=None),
            "lag_s_max": max((s["lag_s"] for s in after), default=None),
            "started_per_s_mean": statistics.fmean(s["started_per_s"] for s in after)
            if after
            else None,
            "total_bytes_at_warmup": at_warmup["total_bytes"],
            "total_bytes_warmup_max": warmup_peak,
            "total_bytes_max": max((s["total_bytes"] for s in after), default=None),
            "claim_p99_ms_max": max((s["claim_p99_ms"] for s in after), default=None),
        },
    }
    if args.limited_rate:
        limited = [s["limited"] for s in after]
        summary["limited"] = {
            "rate_limit": args.limited_rate,
            "pushed_per_s_mean": statistics.fmean(s["pushed_per_s"] for s in limited)
            if limited
            else None,
            "started_per_s_mean": statistics.fmean(s["started_per_s"] for s in limited)
            if limited
            else None,
            "latency_p99_ms_max": max((s["latency_p99_ms"] for s in limited), default=None),
            "lag_s_max": max((s["lag_s"] for s in limited), default=None),
        }
    if args.pin_seconds:
        summary["pin"] = pin_windows(samples, args.pin_at, args.pin_seconds)
    (out / f"soak-{label}.json").write_text(
        json.dumps({"summary": summary, "samples": samples}, indent=1)
    )
    plot(samples, out / f"soak-{label}.png", label, args)
    print(json.dumps(summary, indent=1))
    if not args.check:
        return 0
    failures = []
    stats = summary["after_warmup"]
    if not after:
        failures.append("no sample after the warm-up")
    else:
        if stats["lag_s_max"] > args.max_lag:
            failures.append(f"lag reached {stats['lag_s_max']:.1f} s (limit {args.max_lag:g} s)")
        if args.limited_rate:
            bound = args.max_limited_lag if args.max_limited_lag is not None else args.max_lag + 1
            limited_lag = summary["limited"]["lag_s_max"]
            if limited_lag > bound:
                failures.append(
                    f"the limited kind's lag reached {limited_lag:.1f} s (limit {bound:g} s)"
                )
        growth = size_growth_failure(samples, args.warmup, args.max_growth)
        if growth:
            failures.append(growth)
    for failure in failures:
        print(f"soak check failed: {failure}", file=sys.stderr)
    if not failures:
        print("soak check passed: lag and size stayed bounded after the warm-up")
    return 1 if failures else 0


def plot(samples: list[dict[str, Any]], path: Path, label: str, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    (a, b), (c, d) = axes
    a.plot(t, [s["latency_p50_ms"] for s in samples], label="p50")
    a.plot(t, [s["latency_p99_ms"] for s in samples], label="p99")
    a.set_title("push → start latency (ms)")
    a.legend()
    b.plot(t, [s["lag_s"] for s in samples], color="tab:red", label=KIND)
    if args.limited_rate:
        b.plot(t, [s["limited"]["lag_s"] for s in samples], color="tab:purple",
               label=f"{LIMITED} (RateLimit {args.limited_rate:g}/s)")  # fmt: skip
        b.legend()
    b.set_title("lag: oldest due task (s)")
    c.plot(t, [s["claim_p50_ms"] for s in samples], label="claim p50")
    c.plot(t, [s["claim_p99_ms"] for s in samples], label="claim p99")
    c.plot(t, [s["dead_rows"] / 1000 for s in samples], label="dead rows (thousands)")
    c.set_title("claim statement (ms) and dead rows")
    c.legend()
    d.plot(t, [s["total_bytes"] / 1_048_576 for s in samples], label="table + indexes")
    d.plot(t, [s["table_bytes"] / 1_048_576 for s in samples], label="table")
    d.set_title("size (MB)")
    d.legend()
    for ax in (c, d):
        ax.set_xlabel("minutes")
    if args.pin_seconds:
        for ax in axes.flat:
            ax.axvspan(args.pin_at / 60, (args.pin_at + args.pin_seconds) / 60, alpha=0.15)
    beside = f" + {args.limited_rate:g}/s rate-limited" if args.limited_rate else ""
    fig.suptitle(f"soak {label}: {args.rate:g} tasks/s{beside}, TTL {args.ttl:g} s")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["run", "worker"], default="run")
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_SOAK_DSN"))
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="tasks pushed per second")
    parser.add_argument("--ttl", type=float, default=0.0, help="retention TTL of finished tasks")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--worker-count", type=int, default=16)
    parser.add_argument("--pin-at", type=float, default=120.0)
    parser.add_argument("--pin-seconds", type=float, default=0.0)
    parser.add_argument("--warmup", type=float, default=120.0)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--max-lag", type=float, default=1.0)
    parser.add_argument("--max-growth", type=float, default=0.2)
    parser.add_argument(
        "--limited-rate",
        type=float,
        default=0.0,
        help="tasks/s of a second kind with a rate limit of as many (0: none)",
    )
    parser.add_argument(
        "--max-limited-lag",
        type=float,
        default=None,
        help="--check bound on the limited kind's lag (default: --max-lag + 1 s)",
    )
    parser.add_argument("--out-dir", default="docs/images")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    if args.role == "worker":
        asyncio.run(worker_main(args.dsn, args.ttl, args.worker_count, args.limited_rate))
        return
    if args.rate <= 0 or args.minutes <= 0:
        parser.error("--rate and --minutes must be positive")
    if args.limited_rate < 0:
        parser.error("--limited-rate must be positive (or 0: none)")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
