"""Benchmark driver for pgqueue (runs with the project's own interpreter).

Configuration: `AsyncQueue(dsn)` with its defaults; kind `noop` registered with
`worker_count=concurrency` (10), `attempt_timeout=30`, `max_attempts=3` and
`terminal_tasks_ttl=0`, so a finished task's row is deleted at once and "done" means that no
row of the kind is left. The 64-pusher workloads use one `AsyncQueue(dsn, max_connections=64)`
(enqueue_async64) or one blocking `Queue(dsn, max_connections=64)` (enqueue_threads64): a pool
connection per pusher (the default is 8).

The scale check (`--prefill-terminal`, `--prefill-delayed`) inserts rows straight into
`pgqueue.tasks`: finished rows of another kind, and rows of the measured kind that are due in
a year, which must not slow down claiming the due ones.

`AsyncQueue(dsn)` loads its psycopg adapter (and psycopg_pool) on first use, about 11 ms; the
driver imports it with pgqueue, so a worker process has it loaded before it says `ready`, as
the peers' drivers have their libraries (and drivers) imported at the top.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import harness
from pgconn import Db

import pgqueue
import pgqueue.adapters.psycopg  # loaded before `ready`, as every peer's library
import pgqueue.migrate
from pgqueue import AsyncQueue, KindOptions, Queue, Task

KIND = "noop"
ARCHIVED_KIND = "archived"
SCHEMA = "pgqueue"
TABLE = f"{SCHEMA}.tasks"
# Rows due further away than this are the scale check's future-delayed filler.
OPEN = (
    f"kind = '{KIND}' AND status IN ('new', 'must_retry')"
    " AND delayed_till < now() + interval '30 days'"
)
EXHAUSTED = f"kind = '{KIND}' AND status = 'no_attempts_left'"


def _count(condition: str) -> str:
    return f"SELECT count(*) FROM {TABLE} WHERE {condition}"


def _first(condition: str, order: str) -> str:
    return f"SELECT id FROM {TABLE} WHERE {condition} ORDER BY kind, {order} LIMIT 1"


async def noop(envelope: Any) -> None:
    harness.task_started(envelope.payload)


class PgqueueAdapter(harness.Adapter):
    lib = "pgqueue"
    has_sync = True

    def __init__(self, dsn: str, concurrency: int) -> None:
        super().__init__(dsn, concurrency)
        self._queue: AsyncQueue | None = None
        self._sync_queue: Queue | None = None
        self._pushers: int | None = None

    def version(self) -> str:
        try:
            return version("pgqueue")
        except PackageNotFoundError:
            return str(getattr(pgqueue, "__version__", "source"))

    def _options(self) -> KindOptions:
        return KindOptions(
            worker_count=self.concurrency,
            attempt_timeout=30.0,
            max_attempts=3,
            terminal_tasks_ttl=0,
        )

    def config(self) -> dict[str, Any]:
        return {
            "facade": "AsyncQueue",
            "worker_count": self.concurrency,
            "attempt_timeout": 30.0,
            "max_attempts": 3,
            "terminal_tasks_ttl": 0,
            "max_connections": 8,
            "max_connections_64_pushers": harness.PUSHERS,
        }

    def _new_queue(self, max_connections: int = 8) -> AsyncQueue:
        queue = AsyncQueue(self.dsn, max_connections=max_connections)
        queue.register_kind(KIND, noop, self._options())
        return queue

    async def install(self) -> None:
        # Migrations are applied by a blocking call (alembic): keep it off the event loop.
        await asyncio.to_thread(pgqueue.migrate.upgrade, self.dsn)

    async def open_producer(self) -> None:
        self._queue = self._new_queue()

    async def open_concurrent_producer(self, pushers: int) -> None:
        self._pushers = pushers
        self._queue = self._new_queue(max_connections=pushers)

    def open_sync_producer(self, pushers: int) -> None:
        self._pushers = pushers
        self._sync_queue = Queue(self.dsn, max_connections=pushers)
        self._sync_queue.register_kind(KIND, lambda envelope: None, self._options())

    def push_one_sync(self, payload: dict[str, Any]) -> None:
        assert self._sync_queue is not None
        self._sync_queue.push_task(Task(kind=KIND, payload=payload))

    def close_sync_producer(self) -> None:
        if self._sync_queue is not None:
            self._sync_queue.close()
            self._sync_queue = None

    async def push_one(self, payload: dict[str, Any]) -> None:
        assert self._queue is not None
        await self._queue.push_task(Task(kind=KIND, payload=payload))

    async def push_many(self, payloads: list[dict[str, Any]]) -> None:
        assert self._queue is not None
        await self._queue.push_tasks([Task(kind=KIND, payload=p) for p in payloads])

    async def close_producer(self) -> None:
        if self._queue is not None:
            await self._queue.close()
            self._queue = None

    async def run_worker(self, stop: asyncio.Event) -> None:
        queue = self._new_queue()
        await queue.start()
        try:
            await stop.wait()
            await queue.stop()
        finally:
            await queue.close()

    # With a zero TTL only open or exhausted rows remain. They are looked up in two parts so
    # that each is answered from a partial index: the harness polls every 5 to 50 ms and must
    # not scan the scale check's two million filler rows, loading the server it measures. (A
    # plain EXISTS lets the planner pick a sequential scan that reads them all once none is
    # left.)
    def unfinished_sql(self) -> str:
        return f"SELECT ({_count(OPEN)}) + ({_count(EXHAUSTED)})"

    def has_unfinished_sql(self) -> str:
        return (
            f"SELECT ({_first(OPEN, 'delayed_till')}) IS NOT NULL"
            f" OR ({_first(EXHAUSTED, 'updated_at')}) IS NOT NULL"
        )

    async def prefill(self, db: Db, terminal: int, delayed: int) -> None:
        if terminal:
            await db.execute(
                await _insert_sql(
                    db,
                    terminal,
                    {
                        "kind": f"'{ARCHIVED_KIND}'",
                        "payload": "'{}'",
                        "status": "'succeeded'",
                        "delayed_till": "now() - interval '1 day'",
                        "created_at": "now() - interval '1 day'",
                        "finished_at": "now() - interval '1 hour'",
                    },
                )
            )
        if delayed:
            await db.execute(
                await _insert_sql(
                    db,
                    delayed,
                    {
                        "kind": f"'{KIND}'",
                        "payload": "'{}'",
                        "status": "'new'",
                        "delayed_till": "now() + interval '365 days'",
                        "created_at": "now()",
                    },
                )
            )


async def _insert_sql(db: Db, count: int, values: dict[str, str]) -> str:
    """Build `INSERT … SELECT … FROM generate_series` for `pgqueue.tasks`.

    Each value is cast to its column's declared type (so enum and jsonb literals work
    whatever the type names are). Required columns that have no default and are not given
    get a neutral value of their type.
    """
    columns = await db.rows(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
        " a.atthasdef OR a.attidentity <> '', t.typcategory"
        " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        f" WHERE a.attrelid = '{TABLE}'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
    )
    neutral = {"N": "3", "B": "false", "D": "now()", "S": "''", "A": "'{}'"}
    names: list[str] = []
    exprs: list[str] = []
    for name, type_name, not_null, has_default, category in columns:
        if name in values:
            expr = values[name]
        elif not_null and not has_default and type_name in ("json", "jsonb"):
            expr = "'[]'"
        elif not_null and not has_default and category in neutral:
            expr = neutral[category]
        elif not_null and not has_default:
            raise RuntimeError(f"cannot prefill {TABLE}: no value for required column {name}")
        else:
            continue
        names.append(name)
        exprs.append(f"({expr})::{type_name}")
    missing = set(values) - set(names)
    if missing:
        raise RuntimeError(f"{TABLE} has no column(s) {sorted(missing)}")
    return (
        f"INSERT INTO {TABLE} ({', '.join(names)})"
        f" SELECT {', '.join(exprs)} FROM generate_series(1, {count})"
    )


if __name__ == "__main__":
    harness.main(PgqueueAdapter, __file__)
