"""Dashboard page times with a large tasks table: every page must answer in under 300 ms.

Usage: python benchmarks/dashboard_pages.py [--dsn URL] [--rows 1000000] [--repeat 15]

Fills a scratch schema ``dashboard_bench`` with ``--rows`` tasks (one ``INSERT … SELECT
generate_series``: 5 kinds, the oldest 93 % finished, the newest 7 % open, a day of
throughput history), runs ANALYZE, serves the real service app with uvicorn on a free loopback
port and times each dashboard page over HTTP (after one warm-up request). By default the
dashboard's shared one-second snapshot is off, so every request reads the database. Prints
the median and the slowest time per page and exits non-zero when a page's median is 300 ms
or more. The schema is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import threading
import time
from typing import Any

import httpx
import psycopg

from pgqueue import AsyncQueue, KindOptions
from pgqueue.store.queries import schema_ddl

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SCHEMA = "dashboard_bench"
TOKEN = "bench-operator-token"
LIMIT_MS = 300.0
KINDS = ("send-email", "resize-image", "sync-crm", "charge-card", "build-report")

# Tasks finish roughly in order, so the oldest 93 % are finished (of them 96 % succeeded, 2 %
# cancelled, 2 % exhausted) and the newest 7 % are open (80 % new, 17 % waiting for a retry,
# 3 % claimed). Every 100th row has an external key; payloads vary.
FILL = """
INSERT INTO {schema}.tasks
    (kind, payload, external_key, status, attempts_elapsed, attempts_left, max_attempts,
     delayed_till, claim_token, messages, created_at, started_at, finished_at)
SELECT (ARRAY['send-email', 'resize-image', 'sync-crm', 'charge-card', 'build-report'])[1 + i %% 5],
       jsonb_build_object('user_id', i %% 10007, 'n', i),
       CASE WHEN i %% 100 = 0 THEN 'order:' || i END,
       s.status::{schema}.task_status,
       CASE WHEN s.status = 'new' THEN 0 ELSE 1 END,
       CASE WHEN s.status IN ('new', 'must_retry') THEN 2 ELSE 0 END,
       3,
       CASE WHEN s.claimed THEN now() + interval '10 minutes' ELSE now() END,
       CASE WHEN s.claimed THEN gen_random_uuid() END,
       CASE WHEN s.status = 'no_attempts_left' THEN ARRAY['TimeoutError: attempt exceeded 30 s']
            ELSE '{}'::text[] END,
       now() - make_interval(secs => (%(rows)s - i) * 0.05),
       CASE WHEN s.status <> 'new' THEN now() END,
       CASE WHEN s.finished THEN now() END
FROM generate_series(1, %(rows)s) AS i,
     LATERAL (
         SELECT CASE WHEN NOT open AND i %% 100 < 96 THEN 'succeeded'
                     WHEN NOT open AND i %% 100 < 98 THEN 'cancelled'
                     WHEN NOT open THEN 'no_attempts_left'
                     WHEN i %% 100 < 80 THEN 'new'
                     ELSE 'must_retry' END AS status,
                open AND i %% 100 >= 97 AS claimed,
                NOT open AS finished
         FROM (SELECT i > %(rows)s * 0.93 AS open) AS o
     ) AS s
"""

HISTORY = """
INSERT INTO {schema}.throughput (kind, minute, succeeded, failed, exhausted, cancelled)
SELECT k, m, (random() * 100)::bigint, (random() * 5)::bigint, (random() * 2)::bigint, 0
FROM unnest(%(kinds)s::text[]) AS k,
     generate_series(date_trunc('minute', now()) - interval '1439 minutes',
                     date_trunc('minute', now()), interval '1 minute') AS m
"""


def fill(dsn: str, rows: int) -> tuple[int, int]:
    """Create and fill the schema; the newest and the oldest task id."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(schema_ddl(SCHEMA))
        started = time.perf_counter()
        conn.execute(FILL.replace("{schema}", SCHEMA), {"rows": rows})
        conn.execute(HISTORY.replace("{schema}", SCHEMA), {"kinds": list(KINDS)})
        conn.execute(f"ANALYZE {SCHEMA}.tasks")
        print(f"filled {rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
        newest, oldest = conn.execute(f"SELECT max(id), min(id) FROM {SCHEMA}.tasks").fetchone()  # type: ignore[misc]
    return int(newest), int(oldest)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(
    dsn: str, port: int, snapshot: float, ready: threading.Event, holder: dict[str, Any]
) -> None:
    import uvicorn

    from pgqueue.http import create_app
    from pgqueue.http.settings import HttpSettings

    async def main() -> None:
        queue = AsyncQueue(dsn, schema=SCHEMA)
        for kind in KINDS:
            queue.declare_kind(kind, KindOptions(attempt_timeout=30.0, max_attempts=3))
        settings = HttpSettings(
            dsn=dsn,
            schema=SCHEMA,
            api_token=TOKEN,
            extra={"dashboard_snapshot_seconds": snapshot},
        )
        app = create_app(queue, settings)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        holder["server"] = server
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        ready.set()
        try:
            await task
        finally:
            await queue.close()

    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument(
        "--snapshot-seconds",
        type=float,
        default=0.0,
        help="the dashboard's shared per-kind snapshot age (default 0: every request reads)",
    )
    args = parser.parse_args()

    newest, oldest = fill(args.dsn, args.rows)
    middle = (newest + oldest) // 2
    pages = {
        "overview": "/",
        "overview fragment (live refresh)": "/ui/overview",
        "throughput page": "/ui/throughput",
        "throughput data, hour": "/ui/throughput.json?minutes=60",
        "throughput data, day": "/ui/throughput.json?minutes=1440",
        "tasks, first page": "/ui/tasks",
        "tasks, page in the middle": f"/ui/tasks?before={middle}",
        "tasks, kind + status": "/ui/tasks?kind=sync-crm&status=no_attempts_left",
        "tasks, status new": "/ui/tasks?status=new",
        "tasks, kind + cancelled": "/ui/tasks?kind=sync-crm&status=cancelled",
        "tasks, processing": "/ui/tasks?status=processing",
        "tasks, exhausted, older half": f"/ui/tasks?status=no_attempts_left&before={middle}",
        "tasks, key prefix": "/ui/tasks?key_prefix=order%3A9",
        "tasks, payload contains": "/ui/tasks?kind=send-email&payload=%7B%22user_id%22%3A+42%7D",
        "task detail": f"/ui/tasks/{middle}",
        "kinds": "/ui/kinds",
        "enqueue form": "/ui/enqueue",
        "bulk retry confirmation (kind)": "/ui/bulk?action=retry&kind=charge-card",
        "bulk cancel confirmation (kind)": "/ui/bulk?action=cancel&kind=charge-card",
    }
    port = free_port()
    ready = threading.Event()
    holder: dict[str, Any] = {}
    thread = threading.Thread(
        target=serve, args=(args.dsn, port, args.snapshot_seconds, ready, holder), daemon=True
    )
    thread.start()
    if not ready.wait(60):
        print("the server did not start", file=sys.stderr)
        return 2
    failures = []
    headers = {"authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            print(f"{'page':<36} {'median ms':>10} {'max ms':>8}")
            for name, path in pages.items():
                assert client.get(path).status_code == 200, path  # warm-up
                times = []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    response = client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                median = statistics.median(times)
                flag = "" if median < LIMIT_MS else "  OVER"
                print(f"{name:<36} {median:>10.1f} {max(times):>8.1f}{flag}", flush=True)
                if median >= LIMIT_MS:
                    failures.append(name)
    finally:
        holder["server"].should_exit = True
        thread.join(30)
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    if failures:
        print(f"over {LIMIT_MS:.0f} ms: {', '.join(failures)}", file=sys.stderr)
        return 1
    print(f"every page under {LIMIT_MS:.0f} ms with {args.rows:,} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
