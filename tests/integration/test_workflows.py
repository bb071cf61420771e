"""Workflows in one process: release after the parents, results by name, cancellation of
dependents, batches, retry of a failed parent, cancel by an operator, push in a transaction."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgqueue import (
    Envelope,
    KindOptions,
    MustCancelTask,
    Queue,
    Status,
    Task,
    Workflow,
)
from pgqueue.testing import drain
from tests.conftest import Database


def options(**overrides: Any) -> KindOptions:
    overrides.setdefault("max_attempts", 1)
    return KindOptions(attempt_timeout=10, **overrides)


def statuses(queue: Queue, ids: dict[str, int]) -> dict[str, str]:
    out = {}
    for name, task_id in ids.items():
        info = queue.get_task(task_id)
        assert info is not None
        out[name] = info.status.value
    return out


def test_nodes_run_after_their_parents_and_read_their_results(db: Database) -> None:
    seen: dict[str, Any] = {}

    def step(envelope: Envelope) -> Any:
        seen[envelope.node or "?"] = envelope.parents
        return {"from": envelope.node}

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("step", step, options())
        wf = Workflow()
        a = wf.add("charge", Task("step"))
        b = wf.add("ship", Task("step"), after=[a])
        c = wf.add("mail", Task("step"), after=[a])
        wf.add("close", Task("step"), after=[b, c])
        ids = queue.push_workflow(wf)
        assert set(ids) == {"charge", "ship", "mail", "close"}
        assert statuses(queue, ids) == {
            "charge": "new", "ship": "blocked", "mail": "blocked", "close": "blocked",
        }  # fmt: skip
        assert [r.id for r in drain(queue, "step", limit=1)] == [ids["charge"]]
        assert statuses(queue, ids)["ship"] == "new"
        drain(queue, "step")
        assert set(statuses(queue, ids).values()) == {"succeeded"}
        assert seen["charge"] == {}
        assert seen["ship"] == {"charge": {"from": "charge"}}
        assert seen["close"] == {"ship": {"from": "ship"}, "mail": {"from": "mail"}}
        info = queue.get_task(ids["close"])
        assert info is not None and info.workflow_id == ids.workflow_id
        assert info.node == "close" and sorted(info.parents) == sorted([ids["ship"], ids["mail"]])


def test_an_exhausted_parent_cancels_dependents_transitively_and_a_batch_gets_counts(
    db: Database,
) -> None:
    counts: list[dict[str, int]] = []

    def work(envelope: Envelope) -> str:
        if envelope.payload == "fail":
            raise RuntimeError("boom")
        if envelope.payload == "cancel":
            raise MustCancelTask("no")
        return "ok"

    def report(envelope: Envelope) -> None:
        counts.append(envelope.outcome_counts)

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("work", work, options())
        queue.register_kind("report", report, options())
        wf = Workflow()
        bad = wf.add("bad", Task("work", "fail"))
        good = wf.add("good", Task("work", "ok"))
        cancelled = wf.add("cancelled", Task("work", "cancel"))
        child = wf.add("child", Task("work"), after=[bad, good])
        grandchild = wf.add("grandchild", Task("work"), after=[child])
        wf.add("report", Task("report"), after=[bad, good, cancelled, child, grandchild],
               when="all_ended")  # fmt: skip
        ids = queue.push_workflow(wf)
        drain(queue)
        got = statuses(queue, ids)
        assert got == {
            "bad": "no_attempts_left", "good": "succeeded", "cancelled": "cancelled",
            "child": "cancelled", "grandchild": "cancelled", "report": "succeeded",
        }  # fmt: skip
        assert counts == [{"succeeded": 1, "cancelled": 3, "no_attempts_left": 1}]
        child_info = queue.get_task(ids["child"])
        assert child_info is not None
        assert child_info.messages == [
            f"cancelled: parent bad (task {ids['bad']}) failed with no attempts left"
        ]
        grand = queue.get_task(ids["grandchild"])
        assert grand is not None
        assert grand.messages == [f"cancelled: parent child (task {ids['child']}) was cancelled"]


def test_batch_helper(db: Database) -> None:
    seen: list[tuple[dict[str, int], dict[str, Any]]] = []

    def member(envelope: Envelope) -> int:
        if envelope.payload % 3 == 0:
            raise MustCancelTask("skip")
        return int(envelope.payload)

    def done(envelope: Envelope) -> None:
        seen.append((envelope.outcome_counts, envelope.parents))

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("member", member, options())
        queue.register_kind("done", done, options())
        wf = Workflow()
        wf.batch([(f"m{i}", Task("member", i)) for i in range(1, 11)], ("done", Task("done")))
        queue.push_workflow(wf)
        drain(queue)
    ((counts, parents),) = seen
    assert counts == {"succeeded": 7, "cancelled": 3, "no_attempts_left": 0}
    assert parents["m4"] == 4 and parents["m3"] is None


def test_retrying_a_failed_parent_reopens_what_it_cancelled(db: Database) -> None:
    fail = {"on": True}

    def work(envelope: Envelope) -> str:
        if envelope.payload == "flaky" and fail["on"]:
            raise RuntimeError("down")
        return str(envelope.node)

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("work", work, options())
        wf = Workflow()
        flaky = wf.add("flaky", Task("work", "flaky"))
        mid = wf.add("mid", Task("work"), after=[flaky])
        wf.add("leaf", Task("work"), after=[mid])
        ids = queue.push_workflow(wf)
        drain(queue)
        assert statuses(queue, ids) == {
            "flaky": "no_attempts_left", "mid": "cancelled", "leaf": "cancelled",
        }  # fmt: skip
        fail["on"] = False
        assert queue.retry_task(ids["flaky"]) is True
        assert statuses(queue, ids) == {"flaky": "must_retry", "mid": "blocked", "leaf": "blocked"}
        drain(queue)
        assert set(statuses(queue, ids).values()) == {"succeeded"}
        leaf = queue.get_task(ids["leaf"])
        assert leaf is not None and leaf.result == "leaf"


def test_an_operator_cancel_of_a_node_cancels_its_dependents(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("work", lambda e: None, options())
        wf = Workflow()
        a = wf.add("a", Task("work"))
        b = wf.add("b", Task("work"), after=[a])
        wf.add("c", Task("work"), after=[b])
        wf.add("d", Task("work"), after=[b], when="all_ended")
        ids = queue.push_workflow(wf)
        assert queue.cancel_task(ids["b"]) is True  # a blocked node
        assert statuses(queue, ids) == {
            "a": "new", "b": "cancelled", "c": "cancelled", "d": "new",
        }  # fmt: skip
        assert queue.retry_task(ids["c"]) is True  # an operator may still run it
        drain(queue)
        assert statuses(queue, ids) == {
            "a": "succeeded", "b": "cancelled", "c": "succeeded", "d": "succeeded",
        }  # fmt: skip


def test_retry_of_a_blocked_node_leaves_it_blocked(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("work", lambda e: None, options())
        wf = Workflow()
        a = wf.add("a", Task("work"))
        wf.add("b", Task("work"), after=[a])
        ids = queue.push_workflow(wf)
        assert queue.retry_task(ids["b"]) is False
        assert statuses(queue, ids)["b"] == "blocked"


def test_push_workflow_tx_in_a_rolled_back_transaction_leaves_no_node(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("work", lambda e: None, options())
        wf = Workflow()
        a = wf.add("a", Task("work"))
        wf.add("b", Task("work"), after=[a])
        with psycopg.connect(db.dsn) as conn:
            ids = queue.push_workflow_tx(conn, wf)
            assert len(ids) == 2
            conn.rollback()
        assert db.scalar("SELECT count(*) FROM {schema}.tasks") == 0
        with psycopg.connect(db.dsn) as conn:
            ids = queue.push_workflow_tx(conn, wf)
            conn.commit()
        assert db.scalar("SELECT count(*) FROM {schema}.tasks") == 2
        assert {queue.get_task(i).status for i in ids.values()} == {  # type: ignore[union-attr]
            Status.NEW,
            Status.BLOCKED,
        }


def test_a_ttl_zero_node_is_kept_for_its_children(db: Database) -> None:
    seen: list[Any] = []

    def read(envelope: Envelope) -> Any:
        seen.append(envelope.parents)
        return 7

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("gone", read, options(terminal_tasks_ttl=0))
        wf = Workflow()
        a = wf.add("a", Task("gone"))
        wf.add("b", Task("gone"), after=[a])
        queue.push_workflow(wf)
        drain(queue)
    assert seen == [{}, {"a": 7}]


@pytest.mark.parametrize("sqlalchemy_style", [False])
def test_tasks_pushed_alone_carry_no_workflow(db: Database, sqlalchemy_style: bool) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("plain", lambda e: e.parents, options())
        task_id = queue.push_task(Task("plain"))
        (run,) = drain(queue, "plain")
        assert run.result == {}
        assert task_id is not None
        info = queue.get_task(task_id)
        assert info is not None and info.workflow_id is None and info.parents == []


def test_a_node_whose_last_attempt_died_with_its_worker_is_ended_by_the_sweeper(
    db: Database,
) -> None:
    from pgqueue.store import operations

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("work", lambda e: None, options())
        wf = Workflow()
        a = wf.add("a", Task("work"))
        wf.add("b", Task("work"), after=[a])
        wf.add("c", Task("work"), after=[a], when="all_ended")
        ids = queue.push_workflow(wf)
        # A claim of the last attempt whose process dies: leased for no time, never recorded.
        (row,) = queue.executor.run(operations.claim_due_tasks(queue.queries, "work", 1, 0.0))
        assert row[0] == ids["a"]
        ended = queue.executor.run(operations.end_abandoned_nodes(queue.queries, ["work"]))
        assert ended == [ids["a"]]
        assert statuses(queue, ids) == {"a": "no_attempts_left", "b": "cancelled", "c": "new"}
        info = queue.get_task(ids["a"])
        assert info is not None and "lease ended without a result" in info.messages[-1]
        # Nothing left to end; a plain task out of attempts is no business of it.
        assert queue.executor.run(operations.end_abandoned_nodes(queue.queries, ["work"])) == []


async def test_async_queue_pushes_workflows_and_joins_the_callers_transaction(
    db: Database,
) -> None:
    from pgqueue import AsyncQueue

    queue = AsyncQueue(db.dsn, schema=db.schema)
    try:
        queue.declare_kind("work", options())
        wf = Workflow()
        a = wf.add("a", Task("work"))
        wf.add("b", Task("work"), after=[a])
        async with await psycopg.AsyncConnection.connect(db.dsn) as conn:
            await queue.push_workflow_tx(conn, wf)
            await conn.rollback()
        assert db.scalar("SELECT count(*) FROM {schema}.tasks") == 0
        ids = await queue.push_workflow(wf)
        nodes = await queue.get_workflow(ids.workflow_id)
        assert [(n.node, n.status, n.parents) for n in nodes] == [
            ("a", "new", []),
            ("b", "blocked", [ids["a"]]),
        ]
        assert await queue.get_nodes([ids["b"]]) == {ids["b"]: ("work", "b", "blocked")}
    finally:
        await queue.close()
