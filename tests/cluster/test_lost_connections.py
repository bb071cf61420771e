"""A real server restart under a plain queue and a real shard stop under a sharded queue, on
psycopg and asyncpg: callers see success or pgqueue's own errors, never a driver's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgqueue import AsyncQueue, DatabaseUnavailable, KindOptions, Queue, Task
from pgqueue.adapters.asyncpg import AsyncpgExecutor
from pgqueue.adapters.shards import AsyncShardedQueue, ShardedQueue, ShardUnavailable
from pgqueue.store.queries import schema_ddl
from tests.cluster.servers import PostgresServer

pytestmark = pytest.mark.cluster

OPTIONS = KindOptions(attempt_timeout=5.0)


@pytest.fixture(scope="module")
def server(cluster_root: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(cluster_root, f"restart_{uuid.uuid4().hex[:6]}").init_primary()
    try:
        server.start()
        yield server
    finally:
        server.ensure_stopped()


@pytest.fixture
def schema(server: PostgresServer) -> str:
    name = f"l_{uuid.uuid4().hex[:10]}"
    server.execute(schema_ddl(name))
    return name


def restart(server: PostgresServer) -> None:
    server.stop("fast")
    server.start()


def keys_on(server: PostgresServer, schema: str) -> list[Any]:
    return [
        row[0] for row in server.execute(f"SELECT external_key FROM {schema}.tasks ORDER BY id")
    ]


def test_a_blocking_queue_pushes_after_a_server_restart(
    server: PostgresServer, schema: str
) -> None:
    with Queue(server.dsn, schema=schema) as queue:
        queue.declare_kind("k", OPTIONS)
        queue.push_task(Task("k", external_key="before"))
        restart(server)
        queue.push_task(Task("k", external_key="after"))  # raised AdminShutdown before
        assert queue.count_tasks() == {("k", "new"): 2}
    assert keys_on(server, schema) == ["before", "after"]


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_an_async_queue_pushes_after_a_server_restart(
    server: PostgresServer, schema: str, driver: str
) -> None:
    target = AsyncpgExecutor(server.dsn) if driver == "asyncpg" else server.dsn
    queue = AsyncQueue(target, schema=schema)
    queue.declare_kind("k", OPTIONS)
    try:
        await queue.push_task(Task("k", external_key="before"))
        restart(server)  # blocks the loop: it cannot read the server's farewell first
        await queue.push_task(Task("k", external_key="after"))
        await queue.retry_tasks("k")
    finally:
        await queue.close()
    assert keys_on(server, schema) == ["before", "after"]


@pytest.fixture
def shard_schema(shard_servers: list[PostgresServer]) -> Iterator[str]:
    name = f"ls_{uuid.uuid4().hex[:10]}"
    for shard in shard_servers:
        shard.execute(schema_ddl(name))
    yield name
    for shard in shard_servers:
        if not shard.is_running():
            shard.start()
        shard.execute(f"DROP SCHEMA {name} CASCADE")


def key_on(queue: Any, shard: int, prefix: str) -> str:
    return next(
        f"{prefix}{i}" for i in range(10_000) if queue.shard_for("k", f"{prefix}{i}") == shard
    )


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_an_async_sharded_push_to_a_stopped_shard_raises_shard_unavailable(
    shard_servers: list[PostgresServer], shard_schema: str, driver: str
) -> None:
    dsns = [s.dsn for s in shard_servers]
    targets: list[Any] = [AsyncpgExecutor(d) for d in dsns] if driver == "asyncpg" else dsns
    down = shard_servers[2]
    async with AsyncShardedQueue(targets, schema=shard_schema, retry_after=0.0) as queue:
        queue.declare_kind("k", OPTIONS)
        for shard in range(3):  # every shard's pool holds a live connection
            await queue.push_task(Task("k", external_key=key_on(queue, shard, "warm")))
        down.stop("fast")
        try:
            with pytest.raises(ShardUnavailable, match="shard 2") as info:
                await queue.push_task(Task("k", external_key=key_on(queue, 2, "down")))
            assert isinstance(info.value, DatabaseUnavailable)
            await queue.push_task(Task("k", external_key=key_on(queue, 0, "up")))
            with pytest.raises(ShardUnavailable):
                await queue.count_tasks()  # admin calls fan out, and say which shard is away
        finally:
            down.start()
        await queue.push_task(Task("k", external_key=key_on(queue, 2, "back")))
        counts = await queue.count_tasks()
    assert counts == {("k", "new"): 5}


def test_a_blocking_sharded_push_to_a_stopped_shard_raises_shard_unavailable(
    shard_servers: list[PostgresServer], shard_schema: str
) -> None:
    down = shard_servers[2]
    with ShardedQueue([s.dsn for s in shard_servers], schema=shard_schema, retry_after=0.0) as q:
        q.declare_kind("k", OPTIONS)
        for shard in range(3):
            q.push_task(Task("k", external_key=key_on(q, shard, "warm")))
        down.stop("fast")
        try:
            with pytest.raises(ShardUnavailable, match="shard 2"):
                q.push_task(Task("k", external_key=key_on(q, 2, "down")))
            q.push_task(Task("k", external_key=key_on(q, 1, "up")))
        finally:
            down.start()
        q.push_task(Task("k", external_key=key_on(q, 2, "back")))
        assert q.count_tasks() == {("k", "new"): 5}
