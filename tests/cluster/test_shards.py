"""A sharded queue on three real PostgreSQL servers: routing by slot, spread, exactly-once
drain by two worker processes, fleet-wide key idempotency, fan-out admin calls, transactions
checked against their shard, and a shard stopped mid-drain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue import (
    Jitter,
    JitterDelayer,
    KindOptions,
    LoopOptions,
    RateLimit,
    Status,
    Task,
)
from pgqueue.adapters.shards import (
    AsyncShardedQueue,
    ShardedQueue,
    ShardUnavailable,
    SlotMap,
    WrongShard,
    slot_of,
    split_task_id,
)
from pgqueue.store.queries import schema_ddl
from tests.cluster.conftest import await_for, wait_for
from tests.cluster.servers import PostgresServer

pytestmark = pytest.mark.cluster

FAST = LoopOptions(poll_period=0.2, lease_margin=2.0, janitor_period=60.0)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def schema(shard_servers: list[PostgresServer]) -> Iterator[str]:
    name = f"s_{uuid.uuid4().hex[:10]}"
    for server in shard_servers:
        server.execute(schema_ddl(name))
    yield name
    for server in shard_servers:
        if server.is_running():
            server.execute(f"DROP SCHEMA {name} CASCADE")


def rows_on(server: PostgresServer, schema: str, where: str = "true") -> list[Any]:
    return server.execute(
        f"SELECT kind, external_key, status::text FROM {schema}.tasks WHERE {where}"
    )


def count_on(server: PostgresServer, schema: str, where: str = "true") -> int:
    return int(server.execute(f"SELECT count(*) FROM {schema}.tasks WHERE {where}")[0][0])  # type: ignore[call-overload]


def test_30000_keyed_tasks_land_by_slot_and_two_processes_drain_them_once(
    shard_servers: list[PostgresServer], schema: str, tmp_path: Path
) -> None:
    dsns = [s.dsn for s in shard_servers]
    total = 30_000
    with ShardedQueue(dsns, schema=schema) as queue:
        queue.declare_kind("job", KindOptions(attempt_timeout=10.0))
        keys = [f"order:{n}" for n in range(total)]
        for start in range(0, total, 3000):
            ids = queue.push_tasks(
                [Task("job", n, f"order:{n}") for n in range(start, start + 3000)]
            )
            assert all(i is not None for i in ids)
            shards = [split_task_id(i)[0] for i in ids if i is not None]
            assert shards == [
                queue.shard_for("job", f"order:{n}") for n in range(start, start + 3000)
            ]

        # Each task sits on the shard its slot maps to; the spread is within ±10 %.
        for index, server in enumerate(shard_servers):
            for kind, key, _ in rows_on(server, schema):
                assert queue.shard_for(kind, key) == index, key
        per_shard = [count_on(s, schema) for s in shard_servers]
        assert sum(per_shard) == total
        assert all(abs(n - total / 3) <= total / 30 for n in per_shard), per_shard

        # The same keys again: one row per key in the whole fleet.
        again = queue.push_tasks([Task("job", n, keys[n]) for n in range(0, total, 7)])
        assert again == [None] * len(again)
        assert queue.push_task(Task("job", 0, keys[0])) is None
        assert sum(count_on(s, schema) for s in shard_servers) == total

        # Adding a fourth shard would move these keys (the count that must reach zero first).
        moved = SlotMap.even(3).moved(SlotMap.even(3).add_shard())
        in_moved = Counter(
            queue.shard_for("job", key) for key in keys if slot_of("job", key) in set(moved)
        )
        assert queue.count_keys_in_slots(moved) == {s: in_moved[s] for s in range(3)}
        assert 0 < sum(in_moved.values()) < total / 3

        # Two worker processes drain everything, each task once.
        env = {**os.environ, "PGQUEUE_SHARDS": " ".join(dsns), "PGQUEUE_SCHEMA": schema}
        outs = [tmp_path / f"worker{n}.txt" for n in range(2)]
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.cluster.shard_worker", str(out)],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for out in outs
        ]
        try:
            for worker in workers:
                assert worker.stdout is not None
                assert worker.stdout.readline().strip() == "listening"
            wait_for(
                lambda: queue.count_tasks() == {("job", "succeeded"): total},
                timeout=240,
                what="the workers to drain every shard",
            )
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                assert worker.wait(60) == 0
                assert worker.stdout is not None
                worker.stdout.close()
        done = [line for out in outs for line in out.read_text().splitlines()]
        assert len(done) == total
        assert set(done) == set(keys)
        assert all(out.read_text() for out in outs)  # both processes took part


def test_admin_calls_fan_out_and_transactions_must_be_on_the_tasks_shard(
    shard_servers: list[PostgresServer], schema: str
) -> None:
    dsns = [s.dsn for s in shard_servers]

    def fail(envelope: Any) -> None:
        raise RuntimeError("no")

    options = KindOptions(
        attempt_timeout=5.0, max_attempts=1, loop=FAST, delayer=JitterDelayer(Jitter.ZERO, base=0.0)
    )
    with ShardedQueue(dsns, schema=schema) as queue:
        queue.register_kind("fail", fail, options)
        ids = queue.push_tasks([Task("fail", n, f"f:{n}") for n in range(60)])
        assert {split_task_id(i)[0] for i in ids if i is not None} == {0, 1, 2}
        queue.start()
        wait_for(lambda: queue.count_tasks() == {("fail", "no_attempts_left"): 60}, what="failures")
        queue.stop()
        info = queue.get_task(ids[5])  # type: ignore[arg-type]
        assert info is not None and info.id == ids[5] and info.status is Status.NO_ATTEMPTS_LEFT
        assert info.external_key == "f:5"
        # limit counts in the whole fleet, not per shard
        assert queue.retry_tasks("fail", attempts=2, limit=25) == 25
        assert queue.count_tasks() == {("fail", "must_retry"): 25, ("fail", "no_attempts_left"): 35}
        assert queue.retry_tasks("fail", attempts=2) == 35  # the rest, summed over the shards
        assert queue.count_tasks() == {("fail", "must_retry"): 60}
        assert queue.cancel_task_by_key("fail", "f:7")
        assert queue.count_tasks() == {("fail", "must_retry"): 59, ("fail", "cancelled"): 1}

        # push_task_tx: only in a transaction on the task's shard.
        key = "tx:1"
        home = queue.shard_for("fail", key)
        other = (home + 1) % 3
        with psycopg.connect(dsns[other]) as conn:
            with pytest.raises(WrongShard, match=f"belongs to shard {home}"):
                queue.push_task_tx(conn, Task("fail", None, key))
            conn.rollback()
        assert all(count_on(s, schema, "external_key = 'tx:1'") == 0 for s in shard_servers)
        with psycopg.connect(dsns[home]) as conn:
            task_id = queue.push_task_tx(conn, Task("fail", None, key))
        assert task_id is not None and split_task_id(task_id)[0] == home
        assert count_on(shard_servers[home], schema, "external_key = 'tx:1'") == 1
        with psycopg.connect(dsns[other]) as conn:  # keyless: the transaction's shard
            keyless = queue.push_task_tx(conn, Task("fail"))
        assert keyless is not None and split_task_id(keyless)[0] == other


async def test_a_stopped_shard_delays_only_its_own_tasks(
    shard_servers: list[PostgresServer], schema: str
) -> None:
    dsns = [s.dsn for s in shard_servers]
    per_shard = 1500
    down = shard_servers[2]
    started_on_down = 0

    async def job(envelope: Any) -> None:
        nonlocal started_on_down
        if envelope.payload == 2:
            started_on_down += 1

    options = KindOptions(worker_count=10, attempt_timeout=2.0, loop=FAST)
    async with AsyncShardedQueue(dsns, schema=schema, connect_timeout=1.0) as queue:
        queue.register_kind("job", job, options)
        tasks = []
        n = 0
        counts = Counter[int]()
        while min(counts[s] for s in range(3)) < per_shard:
            key = f"k{n}"
            shard = queue.shard_for("job", key)
            if counts[shard] < per_shard:
                tasks.append(Task("job", shard, key))
                counts[shard] += 1
            n += 1
        await queue.push_tasks(tasks)
        await queue.start()
        await await_for(lambda: started_on_down > 0, what="shard 2 to start draining")
        down.stop()
        try:
            await await_for(
                lambda: all(
                    count_on(s, schema, "status = 'succeeded'") == per_shard
                    for s in shard_servers[:2]
                ),
                timeout=120,
                what="the two live shards to finish",
            )
            key = next(f"x{i}" for i in range(1000) if queue.shard_for("job", f"x{i}") == 2)
            began = time.monotonic()
            with pytest.raises(ShardUnavailable, match="shard 2"):
                await queue.push_task(Task("job", 2, key))
            assert time.monotonic() - began < 10
            await queue.push_task(Task("job", 0, next(
                f"y{i}" for i in range(1000) if queue.shard_for("job", f"y{i}") == 0
            )))  # fmt: skip
        finally:
            down.start()
        await await_for(
            lambda: count_on(down, schema, "status = 'succeeded'") == per_shard,
            timeout=120,
            what="the restarted shard to finish its tasks",
        )
        counts_now = await queue.count_tasks()
        assert counts_now == {("job", "succeeded"): 3 * per_shard + 1}


def test_a_periodic_kind_makes_one_task_per_slot_in_the_fleet(
    shard_servers: list[PostgresServer], schema: str
) -> None:
    """Every shard runs the scheduler; only the shard a slot's key routes to creates it."""
    options = KindOptions(attempt_timeout=0.5, loop=FAST)
    with ShardedQueue([s.dsn for s in shard_servers], schema=schema) as queue:
        queue.register_kind("tick", lambda envelope: None, options)
        queue.add_periodic("tick", every=1)
        queue.start()
        wait_for(
            lambda: sum(count_on(s, schema, "kind = 'tick'") for s in shard_servers) >= 4,
            what="four periodic slots",
        )
        queue.stop()
        placed = {
            shard: [key for _, key, _ in rows_on(server, schema, "kind = 'tick'")]
            for shard, server in enumerate(shard_servers)
        }
    keys = [key for keys in placed.values() for key in keys]
    assert len(keys) == len(set(keys)) >= 4, placed  # one task per slot in the whole fleet
    for shard, shard_keys in placed.items():
        for key in shard_keys:
            assert key.startswith("periodic:")
            assert queue.shard_for("tick", key) == shard, (key, shard)


def test_limits_hold_per_shard_and_overrides_fan_out(
    shard_servers: list[PostgresServer], schema: str
) -> None:
    """global_concurrency=1 on three shards: one attempt at a time on each shard, so up to
    three in the fleet; set_limits and clear_limits reach every shard."""
    import threading

    running: Counter[int] = Counter()
    peak: Counter[int] = Counter()
    overall: list[int] = []
    lock = threading.Lock()

    def handler(envelope: Any) -> None:
        shard = envelope.payload["shard"]
        with lock:
            running[shard] += 1
            peak[shard] = max(peak[shard], running[shard])
            overall.append(sum(running.values()))
        time.sleep(0.05)  # the attempt's work: overlap is what is measured
        with lock:
            running[shard] -= 1

    dsns = [s.dsn for s in shard_servers]
    options = KindOptions(attempt_timeout=10.0, worker_count=6, global_concurrency=1, loop=FAST)
    with ShardedQueue(dsns, schema=schema) as queue:
        queue.register_kind("job", handler, options)
        tasks = [
            Task("job", {"shard": queue.shard_for("job", f"k{n}")}, f"k{n}") for n in range(60)
        ]
        queue.push_tasks(tasks)
        queue.start()
        wait_for(lambda: sum(count_on(s, schema, "status = 'succeeded'") for s in shard_servers)
                 == 60, 60)  # fmt: skip
        overrides = queue.set_limits("job", global_concurrency=2, actor="test")
        assert [o.global_concurrency for o in overrides] == [2, 2, 2]
        assert [o.global_concurrency for o in queue.get_limits("job")] == [2, 2, 2]
        queue.clear_limits("job")
        assert not any(o.any for o in queue.get_limits("job"))
    assert set(peak.values()) == {1}, peak
    assert max(overall) > 1  # the shards ran side by side
    for server in shard_servers:
        audited = server.execute(f"SELECT count(*) FROM {schema}.limit_changes")
        assert audited[0][0] == 2  # type: ignore[index]
    half = RateLimit(50, per=1.0).divided(3)
    assert half.per_second == pytest.approx(50 / 3) and half.capacity == 17


def test_workflows_go_whole_to_one_server_and_drain_there(
    shard_servers: list[PostgresServer], schema: str
) -> None:
    """Workflows spread over three servers as keyless tasks do, each whole on one server
    (nodes released by their parents' statements there), and a stopped server hides only its
    own workflows from get_workflow."""
    from pgqueue import Workflow

    dsns = [s.dsn for s in shard_servers]
    interleaved = SlotMap([slot % 3 for slot in range(1024)])
    options = KindOptions(attempt_timeout=5.0, max_attempts=1, loop=FAST)
    with ShardedQueue(dsns, schema=schema, slot_map=interleaved) as queue:
        queue.register_kind("step", lambda envelope: envelope.node, options)
        pushed = []
        for n in range(6):
            wf = Workflow()
            a = wf.add("a", Task("step", n))
            b = wf.add("b", Task("step", n), after=[a])
            c = wf.add("c", Task("step", n), after=[a])
            wf.add("d", Task("step", n), after=[b, c], when="all_ended")
            pushed.append(queue.push_workflow(wf))
        homes = [{split_task_id(i)[0] for i in ids.values()} for ids in pushed]
        assert homes == [{0}, {1}, {2}, {0}, {1}, {2}]
        for ids, (home,) in zip(pushed, homes, strict=True):
            for shard, server in enumerate(shard_servers):
                where = f"workflow_id = '{ids.workflow_id}'"
                assert count_on(server, schema, where) == (4 if shard == home else 0)
        queue.start()
        wait_for(
            lambda: all(count_on(s, schema, "status = 'succeeded'") == 8 for s in shard_servers),
            what="every node of every workflow",
        )
        queue.stop()
        shard_servers[2].stop()
        try:
            nodes = queue.get_workflow(pushed[1].workflow_id)
            assert {n.node: n.status for n in nodes} == dict.fromkeys("abcd", "succeeded")
            with pytest.raises(ShardUnavailable, match="shard 2"):
                queue.get_workflow(pushed[2].workflow_id)
        finally:
            shard_servers[2].start()
