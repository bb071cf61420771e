"""Library-independent part of the benchmark drivers.

Each driver script defines an `Adapter` for one queue library (how to install its schema, push
one task, push a batch, run a worker, count unfinished tasks) and calls `main()`. This module
implements the workloads on top of that, so every library is measured by the same code:

- `enqueue_single`: N pushes, one call (one transaction) each, sequential;
- `enqueue_batch`: N pushes in calls of 1 000 through the library's bulk API;
- `drain_1p` / `drain_2p`: N tasks pre-pushed (not timed), then 1 or 2 worker processes are
  started and the clock runs until the database shows no unfinished task;
- `latency`: one idle worker process; N tasks pushed one at a time at 50/s, each carrying the
  wall-clock time taken right before its push call; the handler records the time it starts;
- `enqueue_threads64`: N pushes, one call (one transaction) each, from 64 threads sharing one
  blocking queue object of the library (n/a where the library has no blocking API);
- `enqueue_async64`: N pushes, one call each, from 64 asyncio tasks sharing one async queue
  object of the library.

Worker processes are this same driver script started with `--role worker`. They talk to the
parent over stdin/stdout with one word per line: the worker prints `ready` once imported, the
parent answers `go` (the measured interval starts here), later `stop`, and the worker prints a
final JSON line with the number of tasks its handler saw.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, TextIO

from pgconn import Db

WORKLOADS: tuple[str, ...] = (
    "enqueue_single",
    "enqueue_batch",
    "enqueue_threads64",
    "enqueue_async64",
    "drain_1p",
    "drain_2p",
    "latency",
)
DEFAULT_N: dict[str, int] = {
    "enqueue_single": 5_000,
    "enqueue_threads64": 20_000,
    "enqueue_async64": 20_000,
    "enqueue_batch": 50_000,
    "drain_1p": 20_000,
    "drain_2p": 20_000,
    "latency": 300,
}
BATCH_SIZE = 1_000
PUSHERS = 64  # threads or asyncio tasks of the enqueue_threads64 / enqueue_async64 workloads
LATENCY_RATE_PER_S = 50.0
LATENCY_WARMUP_TASKS = 5
POLL_INTERVAL_S = 0.05  # the longest wait between two checks for the end of a drain
# A drain's end is checked every END_RESOLUTION of the time elapsed since it began, but not
# more often than every MIN_POLL_INTERVAL_S: a half-second drain is read to within 10 ms, not
# in steps of 50 ms (which put 20,000 tasks in 0.40 s and in 0.44 s both at 0.45 s), while a
# drain of several seconds is polled every 50 ms as before.
END_RESOLUTION = 0.02
MIN_POLL_INTERVAL_S = 0.005
WORKER_HANDSHAKE_TIMEOUT_S = 120.0
WORKER_STOP_TIMEOUT_S = 60.0

log = logging.getLogger("bench")

# Per-process state written by `task_started`, read by the worker process when it stops.
_handled = 0
_first_started: float | None = None  # when this process's first handler started (time.time)
_latency_out: TextIO | None = None


def task_started(payload: Mapping[str, Any] | None) -> None:
    """Record that a handler started; every driver's no-op handler calls this first thing."""
    now = time.time()
    global _handled, _first_started
    _handled += 1
    if _first_started is None:
        _first_started = now
    if _latency_out is not None and payload and "t" in payload:
        _latency_out.write(f"{payload['i']} {now - float(payload['t']):.6f}\n")
        _latency_out.flush()


class Adapter(abc.ABC):
    """How the harness drives one queue library. One instance per process."""

    lib: ClassVar[str]

    def __init__(self, dsn: str, concurrency: int) -> None:
        self.dsn = dsn
        self.concurrency = concurrency

    @abc.abstractmethod
    def version(self) -> str:
        """The installed version of the library."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """The library settings used, reported with every result."""

    @abc.abstractmethod
    async def install(self) -> None:
        """Create the library's schema in the (fresh, empty) database."""

    @abc.abstractmethod
    async def open_producer(self) -> None:
        """Prepare for pushes (connect, register task kinds)."""

    @abc.abstractmethod
    async def push_one(self, payload: dict[str, Any]) -> None:
        """Push one no-op task in one library call (one transaction)."""

    @abc.abstractmethod
    async def push_many(self, payloads: list[dict[str, Any]]) -> None:
        """Push several no-op tasks in one call of the library's bulk API."""

    @abc.abstractmethod
    async def close_producer(self) -> None:
        """Release what `open_producer` acquired."""

    @abc.abstractmethod
    async def run_worker(self, stop: asyncio.Event) -> None:
        """Consume tasks with `self.concurrency` concurrent handlers until `stop` is set,
        then stop gracefully and return."""

    @abc.abstractmethod
    def unfinished_sql(self) -> str:
        """A query counting the no-op tasks that are not finished yet."""

    @abc.abstractmethod
    def has_unfinished_sql(self) -> str:
        """A cheap query telling whether any no-op task is unfinished (polled every 5 to 50 ms)."""

    async def open_concurrent_producer(self, pushers: int) -> None:
        """Prepare for `pushers` concurrent `push_one` calls on one queue object (a pool big
        enough for them where the library has a pool setting). Default: `open_producer`."""
        await self.open_producer()

    # The blocking API, for enqueue_threads64; a library without one leaves `has_sync` False.
    has_sync: ClassVar[bool] = False

    def open_sync_producer(self, pushers: int) -> None:
        """Open one blocking queue object shared by `pushers` threads."""
        raise NotImplementedError(f"{self.lib} has no blocking API")

    def push_one_sync(self, payload: dict[str, Any]) -> None:
        """Push one no-op task in one blocking call (one transaction); called from many threads."""
        raise NotImplementedError(f"{self.lib} has no blocking API")

    def close_sync_producer(self) -> None:
        """Release what `open_sync_producer` acquired."""
        raise NotImplementedError(f"{self.lib} has no blocking API")

    async def prefill(self, db: Db, terminal: int, delayed: int) -> None:
        """Insert `terminal` finished and `delayed` far-future rows directly by SQL."""
        raise NotImplementedError(f"{self.lib} has no prefill for the scale check")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run one benchmark workload for one library.")
    parser.add_argument("--dsn", required=True, help="postgresql:// URL of a fresh database")
    parser.add_argument("--workload", choices=WORKLOADS)
    parser.add_argument("--n", type=int, help="number of tasks (default depends on workload)")
    parser.add_argument("--processes", type=int, help="worker processes for drain workloads")
    parser.add_argument("--concurrency", type=int, default=10, help="handlers per worker process")
    parser.add_argument("--timeout", type=float, help="upper bound on waiting for workers, s")
    parser.add_argument("--prefill-terminal", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--prefill-delayed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--role", choices=("main", "worker"), default="main", help=argparse.SUPPRESS
    )
    parser.add_argument("--latency-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "main" and args.workload is None:
        parser.error("--workload is required")
    return args


def main(adapter_cls: type[Adapter], driver_file: str) -> None:
    """Entry point of every driver script."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    args = parse_args()
    if args.role == "worker":
        sys.exit(asyncio.run(_worker_main(adapter_cls, args)))
    result = asyncio.run(_run_workload(adapter_cls, os.path.abspath(driver_file), args))
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- parent side


async def _run_workload(
    adapter_cls: type[Adapter], driver_file: str, args: argparse.Namespace
) -> dict[str, Any]:
    workload: str = args.workload
    n: int = args.n or DEFAULT_N[workload]
    adapter = adapter_cls(args.dsn, args.concurrency)
    await adapter.install()
    result: dict[str, Any] = {
        "workload": workload,
        "lib": adapter.lib,
        "version": adapter.version(),
        "n": n,
        "config": adapter.config(),
    }
    probe = await Db.connect(args.dsn)
    # The probe checks for unfinished tasks every 5 to 50 ms: it must stay cheap and not take cores
    # away from the system under test with parallel query workers.
    await probe.execute("SET max_parallel_workers_per_gather = 0")
    try:
        if workload == "enqueue_single":
            result.update(await _enqueue_single(adapter, probe, n))
        elif workload == "enqueue_batch":
            result.update(await _enqueue_batch(adapter, probe, n))
        elif workload == "enqueue_threads64":
            result.update(await _enqueue_threads(adapter, probe, n))
        elif workload == "enqueue_async64":
            result.update(await _enqueue_async(adapter, probe, n))
        elif workload in ("drain_1p", "drain_2p"):
            processes = args.processes or (1 if workload == "drain_1p" else 2)
            timeout = args.timeout or max(120.0, n / 100)
            result.update(await _drain(adapter, probe, driver_file, args, n, processes, timeout))
        else:
            timeout = args.timeout or 120.0
            result.update(await _latency(adapter, probe, driver_file, args, n, timeout))
    finally:
        await probe.close()
    return result


async def _enqueue_single(adapter: Adapter, probe: Db, n: int) -> dict[str, Any]:
    await adapter.open_producer()
    try:
        started = time.perf_counter()
        for i in range(n):
            await adapter.push_one({"i": i})
        seconds = time.perf_counter() - started
    finally:
        await adapter.close_producer()
    await _expect_unfinished(adapter, probe, n)
    return {"value": n / seconds, "unit": "tasks/s", "seconds": seconds}


async def _enqueue_batch(adapter: Adapter, probe: Db, n: int) -> dict[str, Any]:
    batches = _batches(n)
    await adapter.open_producer()
    try:
        started = time.perf_counter()
        for batch in batches:
            await adapter.push_many(batch)
        seconds = time.perf_counter() - started
    finally:
        await adapter.close_producer()
    await _expect_unfinished(adapter, probe, n)
    return {"value": n / seconds, "unit": "tasks/s", "seconds": seconds, "batch": BATCH_SIZE}


async def _enqueue_threads(adapter: Adapter, probe: Db, n: int) -> dict[str, Any]:
    """N pushes from PUSHERS threads through one blocking queue object; the clock runs from
    releasing the (already started) threads until the last one is done."""
    if not adapter.has_sync:
        return {"value": None, "unit": "tasks/s", "na": "no blocking API"}
    await asyncio.to_thread(adapter.open_sync_producer, PUSHERS)
    start = threading.Barrier(PUSHERS + 1)
    errors: list[BaseException] = []

    def pusher(index: int) -> None:
        start.wait()
        try:
            for i in range(index, n, PUSHERS):
                adapter.push_one_sync({"i": i})
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    def run() -> float:
        threads = [threading.Thread(target=pusher, args=(k,)) for k in range(PUSHERS)]
        for thread in threads:
            thread.start()
        start.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started

    try:
        seconds = await asyncio.to_thread(run)
    finally:
        await asyncio.to_thread(adapter.close_sync_producer)
    if errors:
        raise RuntimeError(f"{len(errors)} pusher thread(s) failed") from errors[0]
    await _expect_unfinished(adapter, probe, n)
    return {"value": n / seconds, "unit": "tasks/s", "seconds": seconds, "pushers": PUSHERS}


async def _enqueue_async(adapter: Adapter, probe: Db, n: int) -> dict[str, Any]:
    """N pushes from PUSHERS asyncio tasks through one async queue object."""
    await adapter.open_concurrent_producer(PUSHERS)

    async def pusher(index: int) -> None:
        for i in range(index, n, PUSHERS):
            await adapter.push_one({"i": i})

    try:
        started = time.perf_counter()
        await asyncio.gather(*(pusher(k) for k in range(PUSHERS)))
        seconds = time.perf_counter() - started
    finally:
        await adapter.close_producer()
    await _expect_unfinished(adapter, probe, n)
    return {"value": n / seconds, "unit": "tasks/s", "seconds": seconds, "pushers": PUSHERS}


async def _drain(
    adapter: Adapter,
    probe: Db,
    driver_file: str,
    args: argparse.Namespace,
    n: int,
    processes: int,
    timeout: float,
) -> dict[str, Any]:
    if args.prefill_terminal or args.prefill_delayed:
        prefill_started = time.perf_counter()
        await adapter.prefill(probe, args.prefill_terminal, args.prefill_delayed)
        await probe.execute("VACUUM ANALYZE")
        log.warning("prefill took %.1f s", time.perf_counter() - prefill_started)
    await adapter.open_producer()
    try:
        for batch in _batches(n):
            await adapter.push_many(batch)
    finally:
        await adapter.close_producer()
    await probe.execute("ANALYZE")
    await _expect_unfinished(adapter, probe, n)

    async with WorkerProcesses(driver_file, args.dsn, args.concurrency, processes) as workers:
        await workers.wait_ready()
        started = time.perf_counter()
        went_at = time.time()
        busy_at_start = _machine_busy_seconds()
        await workers.go()
        await _wait_until_done(adapter, probe, workers, timeout, started)
        seconds = time.perf_counter() - started
        ended_at = time.time()
        busy = _machine_busy_seconds() - busy_at_start
        handled = await workers.stop()
    first_started = min(t for t in workers.first_started if t is not None)
    return {
        "value": n / seconds,
        "unit": "tasks/s",
        "seconds": seconds,
        # Without the workers' start-up (connecting, installing, the first claim): from the
        # first handler's start to the end, as pgbench leaves out its connections' set-up.
        "running_value": n / (ended_at - first_started),
        "startup_seconds": first_started - went_at,
        # The worker processes' CPU time (user + system) from start to the end of the drain.
        "worker_cpu_us_per_task": sum(workers.cpu_seconds) / n * 1e6,
        # Every process's CPU time over the drain (Linux): the server's share is the rest.
        "machine_cpu_us_per_task": busy / n * 1e6 if busy == busy else None,
        "machine_cpu_busy": busy / seconds / (os.cpu_count() or 1) if busy == busy else None,
        "processes": processes,
        "concurrency": args.concurrency,
        "handled_per_process": handled,
        "prefill_terminal": args.prefill_terminal,
        "prefill_delayed": args.prefill_delayed,
    }


async def _latency(
    adapter: Adapter,
    probe: Db,
    driver_file: str,
    args: argparse.Namespace,
    n: int,
    timeout: float,
) -> dict[str, Any]:
    fd, latency_path = tempfile.mkstemp(prefix="bench-latency-", suffix=".txt")
    os.close(fd)
    try:
        async with WorkerProcesses(
            driver_file, args.dsn, args.concurrency, 1, latency_file=latency_path
        ) as workers:
            await workers.wait_ready()
            await workers.go()
            await adapter.open_producer()
            try:
                # Warm-up: the worker is up, listening and has run a few tasks before we measure.
                for i in range(LATENCY_WARMUP_TASKS):
                    await adapter.push_one({"w": i})
                await _wait_until_done(adapter, probe, workers, timeout)
                await asyncio.sleep(1.0)  # idle workers
                started = time.perf_counter()
                for i in range(n):
                    delay = started + i / LATENCY_RATE_PER_S - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    pushed_at = time.time()
                    await adapter.push_one({"i": i, "t": pushed_at})
            finally:
                await adapter.close_producer()
            await _wait_until_done(adapter, probe, workers, timeout)
            handled = await workers.stop()
        samples = _read_latencies(latency_path)
    finally:
        os.unlink(latency_path)
    if len(samples) != n:
        raise RuntimeError(f"expected {n} latency samples, the handlers recorded {len(samples)}")
    ms = sorted(s * 1000.0 for s in samples.values())
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "value": q[49],
        "unit": "ms",
        "p50_ms": q[49],
        "p95_ms": q[94],
        "p99_ms": q[98],
        "max_ms": ms[-1],
        "mean_ms": statistics.fmean(ms),
        "rate_per_s": LATENCY_RATE_PER_S,
        "processes": 1,
        "concurrency": args.concurrency,
        "handled_per_process": handled,
    }


def _batches(n: int) -> list[list[dict[str, Any]]]:
    return [
        [{"i": i} for i in range(start, min(start + BATCH_SIZE, n))]
        for start in range(0, n, BATCH_SIZE)
    ]


def _read_latencies(path: str) -> dict[int, float]:
    samples: dict[int, float] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            index, seconds = line.split()
            samples.setdefault(int(index), float(seconds))  # at-least-once: keep the first run
    return samples


async def _expect_unfinished(adapter: Adapter, probe: Db, n: int) -> None:
    count = int(await probe.scalar(adapter.unfinished_sql()))
    if count != n:
        raise RuntimeError(f"expected {n} queued tasks in the database, found {count}")


def _machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy so far (``/proc/stat``), or NaN."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return float("nan")
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy
    ticks = [int(f) for f in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


async def _wait_until_done(
    adapter: Adapter,
    probe: Db,
    workers: WorkerProcesses,
    timeout: float,
    started: float | None = None,
) -> None:
    """Poll the database until no task is unfinished; bounded by `timeout`. Given `started` (the
    `perf_counter` reading where a measured interval began), the polls come every
    `END_RESOLUTION` of the time elapsed since, between `MIN_POLL_INTERVAL_S` and
    `POLL_INTERVAL_S`; without it, every `POLL_INTERVAL_S`."""
    sql = adapter.has_unfinished_sql()
    deadline = time.perf_counter() + timeout
    while await probe.scalar(sql):
        workers.check_alive()
        now = time.perf_counter()
        if now > deadline:
            remaining = int(await probe.scalar(adapter.unfinished_sql()))
            raise TimeoutError(f"{remaining} tasks still unfinished after {timeout:.0f} s")
        interval = POLL_INTERVAL_S
        if started is not None:
            interval = min(interval, max(MIN_POLL_INTERVAL_S, (now - started) * END_RESOLUTION))
        await asyncio.sleep(interval)


class WorkerProcesses:
    """Worker subprocesses of the current driver script, started and stopped in lockstep."""

    def __init__(
        self,
        driver_file: str,
        dsn: str,
        concurrency: int,
        count: int,
        latency_file: str | None = None,
    ) -> None:
        self._argv = [
            sys.executable,
            driver_file,
            "--role",
            "worker",
            "--dsn",
            dsn,
            "--concurrency",
            str(concurrency),
        ]
        if latency_file:
            self._argv += ["--latency-file", latency_file]
        self._count = count
        self._procs: list[asyncio.subprocess.Process] = []
        self.cpu_seconds: list[float] = []  # each worker's CPU time until told to stop
        self.first_started: list[float | None] = []  # when each one's first handler started

    async def __aenter__(self) -> WorkerProcesses:
        for _ in range(self._count):
            proc = await asyncio.create_subprocess_exec(
                *self._argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
            self._procs.append(proc)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in self._procs:
            if proc.returncode is None:
                proc.kill()
        for proc in self._procs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), timeout=10)

    async def wait_ready(self) -> None:
        for proc in self._procs:
            await _read_line(proc, lambda line: line == "ready", WORKER_HANDSHAKE_TIMEOUT_S)

    async def go(self) -> None:
        for proc in self._procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        for proc in self._procs:
            assert proc.stdin is not None
            await proc.stdin.drain()

    def check_alive(self) -> None:
        for proc in self._procs:
            if proc.returncode is not None:
                raise RuntimeError(f"worker process exited early with code {proc.returncode}")

    async def stop(self) -> list[int]:
        """Ask every worker to stop gracefully; return how many tasks each one handled."""
        for proc in self._procs:
            assert proc.stdin is not None
            proc.stdin.write(b"stop\n")
            proc.stdin.close()
        handled: list[int] = []
        self.cpu_seconds.clear()
        self.first_started.clear()
        for proc in self._procs:
            line = await _read_line(proc, lambda s: s.startswith("{"), WORKER_STOP_TIMEOUT_S)
            report = json.loads(line)
            handled.append(int(report["handled"]))
            self.cpu_seconds.append(float(report["cpu_seconds"]))
            self.first_started.append(report["first_started"])
            await asyncio.wait_for(proc.wait(), timeout=WORKER_STOP_TIMEOUT_S)
        return handled


async def _read_line(proc: asyncio.subprocess.Process, want: Any, timeout: float) -> str:
    """Read the worker's stdout until a line satisfying `want`; other lines are ignored."""
    assert proc.stdout is not None
    deadline = time.perf_counter() + timeout
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError("worker process did not answer in time")
        raw = await asyncio.wait_for(proc.stdout.readline(), timeout=remaining)
        if not raw:
            code = await asyncio.wait_for(proc.wait(), timeout=10)
            raise RuntimeError(f"worker process exited with code {code}")
        line = raw.decode(errors="replace").strip()
        if want(line):
            return line


# --------------------------------------------------------------------------- worker side


async def _worker_main(adapter_cls: type[Adapter], args: argparse.Namespace) -> int:
    global _latency_out
    if args.latency_file:
        _latency_out = open(args.latency_file, "a", encoding="utf-8")  # noqa: SIM115
    adapter = adapter_cls(args.dsn, args.concurrency)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    command = await asyncio.wait_for(reader.readline(), timeout=WORKER_HANDSHAKE_TIMEOUT_S)
    if command.strip() != b"go":
        return 1

    stop = asyncio.Event()
    cpu_at_go = time.process_time()
    worker = asyncio.create_task(adapter.run_worker(stop))
    stop_command = asyncio.create_task(reader.readline())
    # A worker lives at most an hour; the parent normally says `stop` long before.
    await asyncio.wait({worker, stop_command}, timeout=3600, return_when=asyncio.FIRST_COMPLETED)
    cpu_seconds = time.process_time() - cpu_at_go  # until told to stop: the drain's share
    stop.set()
    stop_command.cancel()
    try:
        await asyncio.wait_for(worker, timeout=WORKER_STOP_TIMEOUT_S)
    except Exception:
        log.exception("worker failed")
        return 1
    finally:
        if _latency_out is not None:
            _latency_out.close()
    report = {"handled": _handled, "cpu_seconds": cpu_seconds, "first_started": _first_started}
    print(json.dumps(report), flush=True)
    return 0
