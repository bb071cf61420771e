"""Workflows on a sharded queue, its shards three databases of the test server: every node of
a workflow lands on one shard (the next keyless slot's, or the transaction's), ids are global
(parents and children too), ``get_workflow`` finds the shard, and the nodes drain in order.
Every sharded push, of tasks or of workflows, reaches the listeners (the pushed-tasks metric)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgqueue import Envelope, InvalidWorkflow, KindOptions, Status, Task, Workflow
from pgqueue.adapters.shards import (
    NUM_SLOTS,
    AsyncShardedQueue,
    ShardedQueue,
    SlotMap,
    WrongShard,
    split_task_id,
)
from pgqueue.events import Event, TasksPushed
from pgqueue.store.operations import WorkflowIds
from pgqueue.store.queries import schema_ddl
from tests.helpers import Recorder

SHARDS = 3
# Slots dealt out in turn, so consecutive keyless pushes (and workflows) go to shards 0, 1, 2.
INTERLEAVED = SlotMap([slot % SHARDS for slot in range(NUM_SLOTS)])
OPTIONS = KindOptions(attempt_timeout=10, max_attempts=1)


class Shards:
    def __init__(self, server_dsn: str, schema: str, dsns: list[str]) -> None:
        self.server_dsn = server_dsn
        self.schema = schema
        self.dsns = dsns

    def nodes_on(self, shard: int, workflow_id: str) -> int:
        with psycopg.connect(self.dsns[shard], autocommit=True) as conn:
            row = conn.execute(
                f"SELECT count(*) FROM {self.schema}.tasks WHERE workflow_id = %s",
                (workflow_id,),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def placement(self, workflow_id: str) -> list[int]:
        """How many of the workflow's nodes each shard holds."""
        return [self.nodes_on(shard, workflow_id) for shard in range(SHARDS)]


@pytest.fixture
def shards(server_dsn: str) -> Iterator[Shards]:
    tag = uuid.uuid4().hex[:8]
    names = [f"shard_{tag}_{n}" for n in range(SHARDS)]
    schema = f"t_{tag}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE DATABASE {name}")
    dsns = [make_conninfo(server_dsn, dbname=name) for name in names]
    for dsn in dsns:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema_ddl(schema))
    yield Shards(server_dsn, schema, dsns)
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def diamond(tag: Any) -> Workflow:
    wf = Workflow()
    a = wf.add("a", Task("step", {"wf": tag}))
    b = wf.add("b", Task("step", {"wf": tag}), after=[a])
    c = wf.add("c", Task("step", {"wf": tag}), after=[a])
    wf.add("d", Task("step", {"wf": tag}), after=[b, c])
    return wf


def shards_of(ids: WorkflowIds) -> set[int]:
    return {split_task_id(task_id)[0] for task_id in ids.values()}


def test_each_workflow_lands_whole_on_one_shard_and_drains_in_order(shards: Shards) -> None:
    lock = threading.Lock()
    ran: list[tuple[Any, str, dict[str, Any]]] = []

    def step(envelope: Envelope) -> Any:
        with lock:
            ran.append((envelope.payload["wf"], envelope.node or "", envelope.parents))
        return {"node": envelope.node}

    with ShardedQueue(shards.dsns, schema=shards.schema, slot_map=INTERLEAVED) as queue:
        queue.register_kind("step", step, OPTIONS)
        pushed = [queue.push_workflow(diamond(n)) for n in range(SHARDS)]
        for n, ids in enumerate(pushed):
            assert shards_of(ids) == {n}  # whole, and the next keyless slot's shard
            placement = [0] * SHARDS
            placement[n] = 4
            assert shards.placement(ids.workflow_id) == placement

        ids = pushed[1]
        blocked = queue.get_task(ids["d"])
        assert blocked is not None and blocked.status is Status.BLOCKED
        assert sorted(blocked.parents) == sorted([ids["b"], ids["c"]])  # global ids
        first = queue.get_task(ids["a"])
        assert first is not None and sorted(first.children) == sorted([ids["b"], ids["c"]])
        nodes = queue.get_workflow(ids.workflow_id)
        assert {n.node: n.id for n in nodes} == dict(ids)
        assert {n.node: sorted(n.parents) for n in nodes}["d"] == sorted([ids["b"], ids["c"]])
        assert queue.get_nodes([ids["d"], pushed[2]["a"]]) == {
            ids["d"]: ("step", "d", "blocked"),
            pushed[2]["a"]: ("step", "a", "new"),
        }
        assert queue.get_workflow(str(uuid.uuid4())) == []

        recorder = Recorder(queue)
        queue.start()
        recorder.wait_count(4 * SHARDS)
        for ids in pushed:
            assert {n.node: n.status for n in queue.get_workflow(ids.workflow_id)} == {
                "a": "succeeded", "b": "succeeded", "c": "succeeded", "d": "succeeded",
            }  # fmt: skip
    for n in range(SHARDS):
        order = [node for wf, node, _ in ran if wf == n]
        assert len(order) == 4 and order[0] == "a" and order[-1] == "d"
        [(_, _, parents)] = [(wf, node, p) for wf, node, p in ran if wf == n and node == "d"]
        assert parents == {"b": {"node": "b"}, "c": {"node": "c"}}


def test_push_workflow_tx_goes_to_the_transactions_shard(shards: Shards) -> None:
    with ShardedQueue(shards.dsns, schema=shards.schema) as queue:
        queue.declare_kind("step", OPTIONS)
        with psycopg.connect(shards.dsns[2]) as conn:
            ids = queue.push_workflow_tx(conn, diamond("tx"))
            assert shards_of(ids) == {2}
            assert shards.placement(ids.workflow_id) == [0, 0, 0]  # not committed yet
        assert shards.placement(ids.workflow_id) == [0, 0, 4]
        with psycopg.connect(shards.dsns[1]) as conn:
            rolled_back = queue.push_workflow_tx(conn, diamond("rolled back"))
            conn.rollback()
        assert shards.placement(rolled_back.workflow_id) == [0, 0, 0]
        assert queue.get_workflow(rolled_back.workflow_id) == []
        with (
            psycopg.connect(shards.server_dsn) as conn,
            pytest.raises(WrongShard, match="on no shard of this queue"),
        ):
            queue.push_workflow_tx(conn, diamond("elsewhere"))
        with pytest.raises(InvalidWorkflow):
            queue.push_workflow(Workflow())  # refused before any SQL, as on a plain queue


async def test_the_async_sharded_queue_pushes_workflows_alone_and_in_a_transaction(
    shards: Shards,
) -> None:
    queue = AsyncShardedQueue(shards.dsns, schema=shards.schema, slot_map=INTERLEAVED)
    try:
        queue.declare_kind("step", OPTIONS)
        alone = [await queue.push_workflow(diamond(n)) for n in range(SHARDS)]
        assert [shards_of(ids) for ids in alone] == [{0}, {1}, {2}]
        async with await psycopg.AsyncConnection.connect(shards.dsns[0]) as conn:
            in_tx = await queue.push_workflow_tx(conn, diamond("tx"))
        assert shards_of(in_tx) == {0}
        assert shards.placement(in_tx.workflow_id) == [4, 0, 0]
        nodes = await queue.get_workflow(alone[2].workflow_id)
        assert [(n.node, n.status) for n in nodes] == [
            ("a", "new"), ("b", "blocked"), ("c", "blocked"), ("d", "blocked"),
        ]  # fmt: skip
        assert {n.id for n in nodes} == set(alone[2].values())
    finally:
        await queue.close()


class PushCounter:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, TasksPushed):
            for kind, count in event.counts:
                self.counts[kind] = self.counts.get(kind, 0) + count


def test_every_sharded_push_reaches_the_listeners(shards: Shards) -> None:
    counter = PushCounter()
    with ShardedQueue(shards.dsns, schema=shards.schema, slot_map=INTERLEAVED) as queue:
        queue.declare_kind("step", OPTIONS)
        queue.declare_kind("one", OPTIONS)
        queue.subscribe(counter)
        assert queue.push_task(Task("one", 0, external_key="k1")) is not None
        assert queue.push_task(Task("one", 0, external_key="k1")) is None  # not inserted
        ids = queue.push_tasks([Task("one", n) for n in range(5)] + [Task("one", 9, "k1")])
        assert ids[-1] is None and all(i is not None for i in ids[:-1])
        shard = queue.shard_for("one", "k2")
        with psycopg.connect(shards.dsns[shard]) as conn:
            queue.push_task_tx(conn, Task("one", 0, external_key="k2"))
            queue.push_workflow_tx(conn, diamond("tx"))
        queue.push_workflow(diamond("alone"))
    assert counter.counts == {"one": 7, "step": 8}


async def test_every_async_sharded_push_reaches_the_listeners(shards: Shards) -> None:
    counter = PushCounter()
    queue = AsyncShardedQueue(shards.dsns, schema=shards.schema, slot_map=INTERLEAVED)
    try:
        queue.declare_kind("step", OPTIONS)
        queue.declare_kind("one", OPTIONS)
        queue.subscribe(counter)
        await queue.push_task(Task("one", 0, external_key="k1"))
        await queue.push_tasks([Task("one", n) for n in range(5)] + [Task("one", 9, "k1")])
        shard = queue.shard_for("one", "k2")
        async with await psycopg.AsyncConnection.connect(shards.dsns[shard]) as conn:
            await queue.push_tasks_tx(conn, [Task("one", 0, external_key="k2")])
            await queue.push_workflow_tx(conn, diamond("tx"))
        await queue.push_workflow(diamond("alone"))
    finally:
        await queue.close()
    assert counter.counts == {"one": 7, "step": 8}
