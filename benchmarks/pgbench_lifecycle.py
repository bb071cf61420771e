"""Bare-SQL ceiling for a job lifecycle, measured with pgbench on a fresh database.

Two custom pgbench scripts emulate what a queue does to a jobs table, without any queue
library in the way:

- `single`: one job per script run: INSERT one row; claim one due row with
  `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id`; complete it.
- `batch100`: INSERT 100 rows in one statement; claim up to 100 due rows with
  `UPDATE … WHERE id IN (SELECT … FOR NO KEY UPDATE SKIP LOCKED LIMIT 100) RETURNING id`;
  complete them with one `UPDATE … WHERE id = ANY(…)`.

Every statement is its own transaction (autocommit), as in a real producer / worker. The result
is jobs/s = rows completed during the run / run length.

Each run starts from the same state: a new table and a `CHECKPOINT`. The batched script is still
bimodal on one server: in some runs the claim's index scan stops marking the claimed rows'
entries dead, walks an ever longer run of them and ends at under half the usual rate. So every
configuration runs `--repeat` times and reports its best run (the ceiling) along with every run.
Usage:

    python benchmarks/pgbench_lifecycle.py [--dsn URL] [--seconds 10] [--clients 2,4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "drivers"))

from pgconn import Db, create_database, drop_database, with_database

DATABASE = "bench_pgbench"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"

SCHEMA = """
DROP TABLE IF EXISTS bench_jobs;
CREATE TABLE bench_jobs (
    id bigserial PRIMARY KEY,
    kind text NOT NULL DEFAULT 'noop',
    payload jsonb NOT NULL DEFAULT '{}',
    status smallint NOT NULL DEFAULT 0,          -- 0 queued, 1 running, 2 done
    attempts integer NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
) WITH (fillfactor = 80);
CREATE INDEX bench_jobs_due ON bench_jobs (run_at, id) WHERE status = 0;
"""

SCRIPTS: dict[str, tuple[str, int]] = {
    "single": (
        """
INSERT INTO bench_jobs (kind, payload) VALUES ('noop', '{}');
WITH claimed AS (
    UPDATE bench_jobs
       SET status = 1, attempts = attempts + 1, locked_until = now() + interval '30 seconds'
     WHERE id = (SELECT id FROM bench_jobs
                  WHERE status = 0 AND run_at <= now()
                  ORDER BY run_at, id
                  LIMIT 1
                  FOR UPDATE SKIP LOCKED)
    RETURNING id
) SELECT coalesce((SELECT id FROM claimed), 0) AS id \\gset
UPDATE bench_jobs SET status = 2, finished_at = now() WHERE id = :id;
""",
        1,
    ),
    "batch100": (
        """
INSERT INTO bench_jobs (kind, payload) SELECT 'noop', '{}' FROM generate_series(1, 100);
WITH claimed AS (
    UPDATE bench_jobs
       SET status = 1, attempts = attempts + 1, locked_until = now() + interval '30 seconds'
     WHERE id IN (SELECT id FROM bench_jobs
                   WHERE status = 0 AND run_at <= now()
                   ORDER BY run_at, id
                   LIMIT 100
                   FOR NO KEY UPDATE SKIP LOCKED)
    RETURNING id
) SELECT coalesce(array_agg(id), '{}') AS ids FROM claimed \\gset
UPDATE bench_jobs SET status = 2, finished_at = now() WHERE id = ANY (:ids::bigint[]);
""",
        100,
    ),
}


def find_pgbench() -> str:
    """Locate pgbench on PATH or in the PostgreSQL 15 server directory."""
    found = shutil.which("pgbench")
    if found:
        return found
    fallback = Path("/usr/lib/postgresql/15/bin/pgbench")
    if fallback.exists():
        return str(fallback)
    raise FileNotFoundError("pgbench not found (install the PostgreSQL client tools)")


def _connection_args(dsn: str) -> tuple[list[str], dict[str, str]]:
    parts = urllib.parse.urlsplit(dsn)
    args = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)]
    if parts.username:
        args += ["-U", urllib.parse.unquote(parts.username)]
    env = dict(os.environ)
    if parts.password:
        env["PGPASSWORD"] = urllib.parse.unquote(parts.password)
    args.append(parts.path.lstrip("/"))
    return args, env


async def _reset_table(dsn: str) -> None:
    db = await Db.connect(dsn)
    try:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                await db.execute(statement)
    finally:
        await db.close()


async def _checkpoint(dsn: str) -> None:
    db = await Db.connect(dsn)
    try:
        await db.execute("CHECKPOINT")
    finally:
        await db.close()


async def _completed(dsn: str) -> int:
    db = await Db.connect(dsn)
    try:
        return int(await db.scalar("SELECT count(*) FROM bench_jobs WHERE status = 2"))
    finally:
        await db.close()


def run_lifecycle(
    admin_dsn: str, seconds: int, clients: list[int], repeat: int = 1
) -> list[dict[str, Any]]:
    """Run both scripts for each client count on a fresh database, ``repeat`` times each; return
    one row per configuration with its best run as ``jobs_per_s`` and every run's figure."""
    pgbench = find_pgbench()
    asyncio.run(create_database(admin_dsn, DATABASE))
    dsn = with_database(admin_dsn, DATABASE)
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as tmp:
            for mode, (script, jobs_per_run) in SCRIPTS.items():
                script_path = Path(tmp) / f"{mode}.sql"
                script_path.write_text(script, encoding="utf-8")
                for count in clients:
                    runs = [
                        _run_once(pgbench, dsn, script_path, count, seconds)
                        for _ in range(max(1, repeat))
                    ]
                    best = max(runs, key=lambda run: run[0])
                    results.append(
                        {
                            "mode": mode,
                            "clients": count,
                            "seconds": seconds,
                            "jobs_completed": best[0],
                            "jobs_per_s": best[0] / seconds,
                            "runs_jobs_per_s": [done / seconds for done, _ in runs],
                            "script_runs_per_s": best[1],
                            "jobs_per_script_run": jobs_per_run,
                        }
                    )
                    figures = ", ".join(f"{done / seconds:,.0f}" for done, _ in runs)
                    print(
                        f"pgbench {mode:<8} clients={count}: {best[0] / seconds:,.0f} jobs/s"
                        + (f" (best of {figures})" if len(runs) > 1 else ""),
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        asyncio.run(drop_database(admin_dsn, DATABASE))
    return results


def _run_once(
    pgbench: str, dsn: str, script_path: Path, clients: int, seconds: int
) -> tuple[int, float | None]:
    """One pgbench run on a new table after a checkpoint: (jobs completed, script runs/s)."""
    asyncio.run(_reset_table(dsn))
    asyncio.run(_checkpoint(dsn))
    conn_args, env = _connection_args(dsn)
    cmd = [
        pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)),
        "-T", str(seconds), "-f", str(script_path), *conn_args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{proc.stderr}\n{proc.stdout}")
    tps = re.search(r"tps = ([0-9.]+)", proc.stdout)
    return asyncio.run(_completed(dsn)), float(tps.group(1)) if tps else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN", DEFAULT_DSN), help="server to use"
    )
    parser.add_argument("--seconds", type=int, default=10, help="length of each pgbench run")
    parser.add_argument("--clients", default="2,4", help="comma-separated client counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration (best kept)")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    for row in run_lifecycle(args.dsn, args.seconds, clients, args.repeat):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
