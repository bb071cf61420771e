"""What a Prometheus scrape of ``pgqueue_tasks`` costs with a large table.

Fills a scratch schema with 2,000,000 succeeded tasks, 10,000 open ones (new, retrying,
due and delayed, a few leased) and 1,000 blocked workflow nodes, then measures:

- 50 concurrent scrapes inside one cache period: how many database queries they caused;
- uncached scrapes (cache period 0): the time of one whole scrape (query + exposition);
- for comparison, an exact ``count(*)`` of the finished rows, which the metrics avoid;
- the blocked nodes' count as the overview reads it (through ``tasks_blocked_idx``), and the
  same count without that index (dropped in a transaction that is rolled back).

    python benchmarks/scrape_cost.py [--dsn URL] [--finished 2000000] [--open 10000]
        [--blocked 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid

import psycopg
from prometheus_client import CollectorRegistry, generate_latest

from pgqueue import KindOptions, Queue
from pgqueue.metrics import instrument
from pgqueue.store.queries import schema_ddl

KINDS = ("email", "thumbnail", "billing", "report")


BLOCKED_COUNT = "SELECT kind, count(*) FROM {schema}.tasks WHERE status = 'blocked' GROUP BY 1"


def fill(dsn: str, schema: str, finished: int, open_tasks: int, blocked: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema_ddl(schema))
        conn.execute(
            f"""INSERT INTO {schema}.tasks
                (kind, payload, status, attempts_elapsed, attempts_left, max_attempts,
                 created_at, updated_at, started_at, finished_at)
            SELECT (%(kinds)s::text[])[1 + i %% 4], jsonb_build_object('i', i), 'succeeded',
                   1, 9, 10, now(), now(), now(), now() - (i %% 3600) * interval '1 second'
            FROM generate_series(1, %(n)s) AS i""",
            {"kinds": list(KINDS), "n": finished},
        )
        conn.execute(
            f"""INSERT INTO {schema}.tasks
                (kind, payload, status, attempts_elapsed, attempts_left, max_attempts,
                 delayed_till, claim_token)
            SELECT (%(kinds)s::text[])[1 + i %% 4], jsonb_build_object('i', i),
                   (CASE WHEN i %% 5 = 0 THEN 'must_retry' ELSE 'new' END)::{schema}.task_status,
                   CASE WHEN i %% 5 = 0 THEN 1 ELSE 0 END, 10, 10,
                   now() + (i %% 3 - 1) * interval '10 minutes',
                   CASE WHEN i %% 50 = 0 THEN gen_random_uuid() END
            FROM generate_series(1, %(n)s) AS i""",
            {"kinds": list(KINDS), "n": open_tasks},
        )
        conn.execute(
            f"""INSERT INTO {schema}.tasks
                (kind, payload, status, attempts_left, max_attempts, workflow_id, node,
                 parents_pending, parents_failed)
            SELECT (%(kinds)s::text[])[1 + i %% 4], jsonb_build_object('i', i), 'blocked',
                   10, 10, gen_random_uuid(), 'n', 1, 0
            FROM generate_series(1, %(n)s) AS i""",
            {"kinds": list(KINDS), "n": blocked},
        )
        conn.execute(f"VACUUM ANALYZE {schema}.tasks")


def blocked_count_ms(dsn: str, schema: str, rounds: int = 20) -> float:
    """Median time of the blocked nodes' count, as the overview's statement reads them."""
    with psycopg.connect(dsn) as conn:
        conn.execute(BLOCKED_COUNT.format(schema=schema)).fetchall()  # plan and cache once
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            conn.execute(BLOCKED_COUNT.format(schema=schema)).fetchall()
            times.append(time.perf_counter() - began)
        conn.rollback()
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGQUEUE_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--finished", type=int, default=2_000_000)
    parser.add_argument("--open", type=int, default=10_000)
    parser.add_argument("--blocked", type=int, default=1_000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument(
        "--keep", metavar="SCHEMA", help="fill SCHEMA once and keep it (reused when it exists)"
    )
    args = parser.parse_args()
    schema = args.keep or f"scrape_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.tasks",)).fetchone()
    if exists and exists[0] is not None:
        print(f"reusing the filled schema {schema}")
    else:
        started = time.perf_counter()
        fill(args.dsn, schema, args.finished, args.open, args.blocked)
        took = time.perf_counter() - started
        print(f"filled {args.finished:,} finished + {args.open:,} open tasks + "
              f"{args.blocked:,} blocked nodes in {took:.1f}s")  # fmt: skip
    try:
        with Queue(args.dsn, schema=schema, max_connections=1) as queue:
            for kind in KINDS:
                queue.declare_kind(kind, KindOptions(attempt_timeout=1))

            registry = CollectorRegistry()
            metrics = instrument(queue, registry, cache_seconds=5.0)
            barrier = threading.Barrier(args.scrapes)
            bodies: list[bytes] = []

            def scrape() -> None:
                barrier.wait()
                bodies.append(generate_latest(registry))

            threads = [threading.Thread(target=scrape) for _ in range(args.scrapes)]
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - began
            print(f"{args.scrapes} concurrent scrapes in one 5 s cache period: "
                  f"{metrics.reader.queries_run} database query, {elapsed * 1000:.0f} ms "
                  f"for all")  # fmt: skip
            sample = next(
                line for line in bodies[0].decode().splitlines()
                if line.startswith('pgqueue_tasks{kind="email",status="succeeded"}')
            )  # fmt: skip
            print(f"  {sample}  (estimate; exact: {args.finished // 4:,})")
            blocked = next(
                line for line in bodies[0].decode().splitlines()
                if line.startswith('pgqueue_tasks{kind="email",status="blocked"}')
            )  # fmt: skip
            print(f"  {blocked}  (exact: {args.blocked // 4:,})")
            metrics.close()

            uncached = CollectorRegistry()
            metrics = instrument(queue, uncached, cache_seconds=0)
            generate_latest(uncached)  # connect and plan once
            times = []
            for _ in range(20):
                began = time.perf_counter()
                generate_latest(uncached)
                times.append(time.perf_counter() - began)
            metrics.close()
            print(f"one uncached scrape: median {statistics.median(times) * 1000:.1f} ms, "
                  f"max {max(times) * 1000:.1f} ms over 20")  # fmt: skip
        with psycopg.connect(args.dsn) as conn:
            began = time.perf_counter()
            conn.execute(
                f"SELECT kind, status, count(*) FROM {schema}.tasks"
                " WHERE status IN ('succeeded', 'cancelled') GROUP BY 1, 2"
            ).fetchall()
            print(f"for comparison, an exact count of the finished rows: "
                  f"{(time.perf_counter() - began) * 1000:.0f} ms")  # fmt: skip
        print(f"the blocked nodes' count: median {blocked_count_ms(args.dsn, schema):.2f} ms "
              "through tasks_blocked_idx")  # fmt: skip
        with psycopg.connect(args.dsn) as conn:  # the same count without the index
            conn.execute(f"DROP INDEX {schema}.tasks_blocked_idx")
            conn.execute(BLOCKED_COUNT.format(schema=schema)).fetchall()
            times = []
            for _ in range(5):
                began = time.perf_counter()
                conn.execute(BLOCKED_COUNT.format(schema=schema)).fetchall()
                times.append(time.perf_counter() - began)
            conn.rollback()  # the index stays
            print(f"  without the index: median {statistics.median(times) * 1000:.1f} ms "
                  "(a scan of the whole table)")  # fmt: skip
    finally:
        if not args.keep:
            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
