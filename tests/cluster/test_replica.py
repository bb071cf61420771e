"""Primary/replica on a real streaming replica: pushes and claims on the primary, lag-tolerant
reads on the replica, the primary when the replica lags too much or is gone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pgqueue import AsyncQueue, KindOptions, LoopOptions, Queue, Status, Task
from pgqueue.adapters.replica import AsyncReplicaExecutor, ReplicaExecutor
from pgqueue.store.queries import schema_ddl
from tests.cluster.conftest import wait_for
from tests.cluster.servers import PostgresServer
from tests.helpers import Recorder

pytestmark = pytest.mark.cluster

OPTS = KindOptions(attempt_timeout=5.0, loop=LoopOptions(poll_period=0.2, lease_margin=2.0))


@pytest.fixture
def schema(primary_and_replica: tuple[PostgresServer, PostgresServer]) -> Iterator[str]:
    primary, replica = primary_and_replica
    name = f"r_{uuid.uuid4().hex[:10]}"
    primary.execute(schema_ddl(name))
    wait_for(
        lambda: replica.execute("SELECT to_regclass(%s)", (f"{name}.tasks",))[0][0] is not None,
        what="the schema to reach the replica",
    )
    yield name
    primary.execute(f"DROP SCHEMA {name} CASCADE")


def count_on(server: PostgresServer, schema: str) -> int:
    return int(server.execute(f"SELECT count(*) FROM {schema}.tasks")[0][0])  # type: ignore[call-overload]


def replica_ran(replica: PostgresServer, sql: str) -> bool:
    """Whether the replica's statement log (``log_statement = 'all'``) shows ``sql``."""
    return sql in replica.log_file.read_text(errors="replace")


def test_reads_go_to_the_replica_writes_to_the_primary_and_lag_sends_reads_back(
    primary_and_replica: tuple[PostgresServer, PostgresServer], schema: str
) -> None:
    primary, replica = primary_and_replica
    executor = ReplicaExecutor(primary.dsn, [replica.dsn], max_lag=60.0, lag_check_period=0.0)
    seen: list[Any] = []
    with Queue(executor, schema=schema) as queue:
        queue.register_kind("k", lambda e: seen.append(e.payload), OPTS)
        ids = queue.push_tasks([Task("k", n) for n in range(3)])
        assert count_on(primary, schema) == 3  # pushes land on the primary
        wait_for(lambda: count_on(replica, schema) == 3, what="replication of the pushes")

        replica.execute("SELECT pg_wal_replay_pause()")
        try:
            [late] = queue.push_tasks([Task("k", 3)])
            assert late is not None
            # The replica has not replayed the last push: a read it serves is stale. That the
            # count says 3 while the primary holds 4 proves the replica served it, as does its
            # statement log.
            assert queue.count_tasks() == {("k", "new"): 3}
            assert executor.router.replicas[0].reads == 1
            assert replica_ran(replica, f"FROM {schema}.tasks\n\tGROUP BY 1, 2")
            assert queue.get_task(late, replica_ok=True) is None  # stale read, by request
            fresh = queue.get_task(late)  # the default reads the primary
            assert fresh is not None and fresh.status is Status.NEW

            # Past the lag bound the primary serves reads.
            strict = ReplicaExecutor(primary.dsn, [replica.dsn], max_lag=0.0)
            with Queue(strict, schema=schema) as strict_queue:
                assert strict_queue.count_tasks() == {("k", "new"): 4}
                assert strict.router.replicas[0].reads == 0
        finally:
            replica.execute("SELECT pg_wal_replay_resume()")
        wait_for(lambda: queue.count_tasks() == {("k", "new"): 4}, what="the replica to catch up")

        # Workers claim and record on the primary (the standby could not take a write).
        recorder = Recorder(queue)
        queue.start()
        for task_id in [*ids, late]:
            assert task_id is not None
            recorder.wait_status(task_id, "succeeded")
        queue.stop()
        assert sorted(seen) == [0, 1, 2, 3]


def test_reads_fall_back_to_the_primary_when_the_replica_stops(
    primary_and_replica: tuple[PostgresServer, PostgresServer], schema: str
) -> None:
    primary, replica = primary_and_replica
    executor = ReplicaExecutor(
        primary.dsn, [replica.dsn], max_lag=60.0, lag_check_period=0.0, connect_timeout=1.0
    )
    with Queue(executor, schema=schema) as queue:
        queue.declare_kind("k", OPTS)
        queue.push_tasks([Task("k", n) for n in range(2)])
        wait_for(lambda: queue.count_tasks() == {("k", "new"): 2}, what="replication")
        reads = executor.router.replicas[0].reads
        assert reads >= 1

        replica.stop()
        try:
            queue.push_task(Task("k", 2))
            for _ in range(3):  # no error, fresh data: the primary answers
                assert queue.count_tasks() == {("k", "new"): 3}
            assert executor.router.replicas[0].reads == reads
            assert executor.router.replicas[0].down_until > 0
        finally:
            replica.start()


async def test_async_replica_executor_routes_reads_and_falls_back(
    primary_and_replica: tuple[PostgresServer, PostgresServer], schema: str
) -> None:
    primary, replica = primary_and_replica
    executor = AsyncReplicaExecutor(
        primary.dsn,
        [replica.dsn],
        max_lag=60.0,
        lag_check_period=0.0,
        retry_after=0.0,
        connect_timeout=1.0,
    )
    async with AsyncQueue(executor, schema=schema) as queue:
        queue.declare_kind("k", OPTS)
        await queue.push_task(Task("k", 1))
        wait_for(lambda: count_on(replica, schema) == 1, what="replication")
        replica.execute("SELECT pg_wal_replay_pause()")
        try:
            await queue.push_task(Task("k", 2))
            assert await queue.count_tasks() == {("k", "new"): 1}  # the replica, stale
        finally:
            replica.execute("SELECT pg_wal_replay_resume()")
        replica.stop()
        try:
            assert await queue.count_tasks() == {("k", "new"): 2}  # the primary
        finally:
            replica.start()
        # Back again: after retry_after the replica serves reads once more.
        wait_for(lambda: count_on(replica, schema) == 2, what="the replica to resume")
        reads = executor.router.replicas[0].reads
        for _ in range(20):
            assert await queue.count_tasks() == {("k", "new"): 2}
            if executor.router.replicas[0].reads > reads:
                break
        assert executor.router.replicas[0].reads > reads
