"""Enqueue over HTTP (``pgqueue serve``) against ``push_task`` called directly, in one run.

    python benchmarks/http_load.py [--dsn URL] [--clients 64] [--seconds 20]
                                   [--batch-size 500] [--batch-seconds 10]

Everything runs on loopback against a fresh schema on the server of --dsn (dropped at the
end). Three phases, each bounded in time:

1. direct: ``Queue.push_task`` from ``--clients`` threads for ``--seconds``;
2. http: ``--clients`` concurrent keep-alive connections to a ``pgqueue serve`` subprocess,
   each sending ``POST /enqueue`` back to back for ``--seconds``;
3. batch: ``POST /enqueue/batch`` of ``--batch-size`` tasks from 4 connections for
   ``--batch-seconds``.

The load generator is a minimal HTTP/1.1 client on asyncio (pre-encoded requests, responses
read by Content-Length) so that on a small machine it takes as little CPU from the server as
possible. Reported: requests/s, p50/p99 latency, the HTTP/direct ratio (target >= 0.60) and
batch tasks/s (target >= 20,000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from pgqueue import KindOptions, Queue, Task
from pgqueue.store.queries import schema_ddl

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
KIND = "bench"
HTTP_RATIO_TARGET = 0.60
BATCH_TARGET = 20_000.0
BATCH_CLIENTS = 4


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(name: str, count: int, seconds: float, latencies: list[float]) -> dict[str, Any]:
    return {
        "phase": name,
        "requests": count,
        "seconds": round(seconds, 2),
        "per_second": round(count / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


def run_direct(dsn: str, schema: str, clients: int, seconds: float) -> dict[str, Any]:
    queue = Queue(dsn, schema=schema)
    queue.declare_kind(KIND, KindOptions(attempt_timeout=60))
    queue.push_task(Task(KIND, {"warm": True}))
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    deadline = 0.0

    def pusher(index: int) -> None:
        mine = latencies[index]
        n = 0
        start.wait()
        while True:
            began = time.perf_counter()
            if began >= deadline:
                return
            queue.push_task(Task(KIND, {"client": index, "n": n}))
            mine.append(time.perf_counter() - began)
            n += 1

    threads = [threading.Thread(target=pusher, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    queue.close()
    flat = [x for xs in latencies for x in xs]
    return summary("direct push_task", len(flat), elapsed, flat)


class Server:
    """``pgqueue serve`` in a subprocess on a port it picks."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="pgqueue-serve-", suffix=".log")  # noqa: SIM115
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")},
            "PGQUEUE_DSN": dsn,
            "PGQUEUE_SCHEMA": schema,
            "PGQUEUE_HTTP_KINDS": KIND,
            "PGQUEUE_HTTP_PORT": "0",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue.cli", "serve"],
            cwd=ROOT,
            env=env,
            stderr=self.log,
        )
        self.port = self._wait_port()

    def _wait_port(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = Path(self.log.name).read_text(errors="replace")
            match = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", text)
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                raise RuntimeError(f"pgqueue serve exited:\n{text}")
            time.sleep(0.1)
        raise RuntimeError("pgqueue serve did not start listening")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        self.log.close()
        return code


def request_bytes(path: str, body: bytes, port: int) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    match = re.search(rb"(?i)content-length:\s*(\d+)", head)
    if match is None:
        raise RuntimeError(f"response without Content-Length: {head!r}")
    await reader.readexactly(int(match.group(1)))
    return status


async def http_clients(
    port: int, clients: int, seconds: float, make_body: Any, path: str
) -> tuple[int, float, list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = 0.0

    async def client(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        try:
            while True:
                payload = request_bytes(path, make_body(index, n), port)
                began = time.perf_counter()
                if began >= deadline:
                    return
                writer.write(payload)
                status = await read_response(reader)
                latencies.append(time.perf_counter() - began)
                statuses[status] = statuses.get(status, 0) + 1
                n += 1
        finally:
            writer.close()

    began = time.perf_counter()
    deadline = began + seconds
    await asyncio.gather(*(client(i) for i in range(clients)))
    return len(latencies), time.perf_counter() - began, latencies, statuses


def run_http(port: int, clients: int, seconds: float) -> dict[str, Any]:
    def body(index: int, n: int) -> bytes:
        return json.dumps({"kind": KIND, "payload": {"client": index, "n": n}}).encode()

    count, elapsed, latencies, statuses = asyncio.run(
        http_clients(port, clients, seconds, body, "/enqueue")
    )
    if set(statuses) != {201}:
        raise RuntimeError(f"unexpected statuses: {statuses}")
    return summary("HTTP POST /enqueue", count, elapsed, latencies)


def run_batch(port: int, batch_size: int, seconds: float) -> dict[str, Any]:
    def body(index: int, n: int) -> bytes:
        tasks = [{"kind": KIND, "payload": {"client": index, "n": n, "i": i}}
                 for i in range(batch_size)]  # fmt: skip
        return json.dumps({"tasks": tasks}).encode()

    count, elapsed, latencies, statuses = asyncio.run(
        http_clients(port, BATCH_CLIENTS, seconds, body, "/enqueue/batch")
    )
    if set(statuses) != {201}:
        raise RuntimeError(f"unexpected statuses: {statuses}")
    result = summary(f"HTTP POST /enqueue/batch of {batch_size}", count, elapsed, latencies)
    result["tasks_per_second"] = round(count * batch_size / elapsed, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    schema = f"bench_http_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(schema_ddl(schema))
    try:
        direct = run_direct(args.dsn, schema, args.clients, args.seconds)
        server = Server(args.dsn, schema)
        try:
            http = run_http(server.port, args.clients, args.seconds)
            batch = run_batch(server.port, args.batch_size, args.batch_seconds)
        finally:
            exit_code = server.stop()
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            rows = conn.execute(f"SELECT count(*) FROM {schema}.tasks").fetchone()[0]  # type: ignore[index]
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    ratio = http["per_second"] / direct["per_second"]
    results = {
        "clients": args.clients,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "phases": [direct, http, batch],
        "http_to_direct": round(ratio, 3),
        "http_target_met": ratio >= HTTP_RATIO_TARGET,
        "batch_target_met": batch["tasks_per_second"] >= BATCH_TARGET,
        "server_exit_code": exit_code,
        "rows_written": rows,
    }
    print(f"{'phase':<34} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for phase in results["phases"]:
        print(
            f"{phase['phase']:<34} {phase['requests']:>9} {phase['per_second']:>9.1f} "
            f"{phase['p50_ms']:>8.2f} {phase['p99_ms']:>8.2f}"
        )
    print(f"HTTP / direct: {ratio:.2f} (target >= {HTTP_RATIO_TARGET:.2f})")
    print(f"batch: {batch['tasks_per_second']:,.0f} tasks/s (target >= {BATCH_TARGET:,.0f})")
    print(f"server exit code {exit_code}; rows written {rows}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
