"""Driver conformance: every shipped executor runs every named statement, delivers
notifications, keeps pgqueue's errors and transactions intact, and gets the claim's index plan.

Each test runs once per executor (see ``conftest.DRIVERS``). A statement added to
``queries.sql`` must get parameters in ``STATEMENT_PARAMS`` below, or the suite fails.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from pgqueue import CapacityExceeded, KindOptions, Task
from pgqueue.registry import KindRegistry
from pgqueue.runtime.completer import Result, record_results
from pgqueue.runtime.execution import Outcome
from pgqueue.store.executor import Operation, Statement, Steps, single
from pgqueue.store.operations import (
    EXACT_FINISHED_BELOW,
    PAYLOAD_SCAN_ROWS,
    claim_due_tasks,
    count_tasks_by_status,
    get_task,
    push_tasks,
)
from pgqueue.store.queries import Queries
from pgqueue.task import Status
from tests.conformance.conftest import Driver
from tests.conftest import Database

TOKEN = "00000000-0000-4000-8000-000000000000"
KIND = "conformance"

# Parameters for every named statement, in the Python types pgqueue's code passes.
STATEMENT_PARAMS: dict[str, dict[str, Any]] = {
    "push_task": {
        "notify": True,
        "kind": KIND,
        "payload": '{"n": 1}',
        "external_key": "key-1",
        "max_attempts": 3,
        "delay": 0.0,
        "notify_within": 1.0,
        "priority": 5,
        "task_group": "g1",
        "trace_context": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    },
    "push_keyless_task": {
        "notify": True,
        "kind": KIND,
        "payload": None,
        "max_attempts": 3,
        "delay": 0.0,
        "notify_within": 1.0,
        "priority": 0,
        "task_group": None,
        "trace_context": None,
    },
    "push_tasks": {
        "tasks": json.dumps([[KIND, {"n": 2}, "key-2", 3, -5, "g2", None]]),
        "delay": 0.0,
        "notify_within": 1.0,
    },
    "push_keyless_tasks": {
        "tasks": json.dumps(
            [
                [
                    KIND,
                    None,
                    None,
                    3,
                    0,
                    None,
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ]
            ]
        ),
        "delay": 5.0,
        "notify_within": 1.0,
    },
    "push_scoped_tasks": {
        "tasks": json.dumps(
            [
                [KIND, None, "key-3", 3, 0, None, None, True],
                [
                    KIND,
                    None,
                    "key-4",
                    3,
                    5,
                    "g",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\nk=v",
                    False,
                ],
            ]
        ),
        "delay": 5.0,
        "notify_within": 1.0,
    },
    "lock_kind_capacity": {"lock_key": f"x:{KIND}"},
    "count_pending_tasks": {"kind": KIND},
    "poll_due_kinds": {"kinds": [KIND], "floors": [None]},
    "claim_due_tasks": {"kind": KIND, "limit": 10, "lease": 30.0, "floor": None},
    "extend_leases": {"ids": "{1,2}", "tokens": "{" + TOKEN + "," + TOKEN + "}", "lease": 30.0},
    "record_outcomes": {
        "ids": "{1,2}",
        "tokens": "{" + TOKEN + "," + TOKEN + "}",
        "statuses": ["succeeded", "must_retry"],
        "delays": [0.0, 1.5],
        "errors": [None, "RuntimeError: boom"],
        "keeps": [3, 3],
        "results": ['{"rows": 1}', None],
    },
    "delete_finished_tasks": {
        "ids": "{1}",
        "tokens": "{" + TOKEN + "}",
        "statuses": ["succeeded"],
        "results": ['{"rows": 2}'],
    },
    "release_claims": {"ids": "{1}", "tokens": "{" + TOKEN + "}"},
    "notify_kinds": {"kinds": [KIND]},
    "get_task_id_by_key": {"kind": KIND, "external_key": "key-1"},
    "cancel_task": {"id": None, "kind": KIND, "external_key": "key-1"},
    "retry_task": {"id": 1, "attempts": 2},
    "retry_tasks": {"kind": KIND, "attempts": 2, "limit": 10},
    "get_task": {"id": 1},
    "get_tasks": {"ids": [1, 2]},
    "get_finished_results": {"ids": [1, 2]},
    "push_workflow": {
        "nodes": json.dumps(
            [
                [KIND, {"n": 1}, 3, 0, None, "a", [], "all_succeeded"],
                [KIND, None, 3, 0, "g", "b", [1], "all_ended"],
            ]
        ),
        "workflow_id": "6a0c2f4e-1d7b-4a77-9f39-3f0a2b1c4d5e",
        "trace": None,
    },
    "settle_workflow_children": {"ids": "{1,2}"},
    "reopen_workflow_children": {"ids": "{1,2}"},
    "get_workflow": {"workflow_id": "6a0c2f4e-1d7b-4a77-9f39-3f0a2b1c4d5e"},
    "get_tasks_nodes": {"ids": "{1,2}"},
    "end_abandoned_workflow_nodes": {"kinds": [KIND], "limit": 10},
    "mark_task_waited": {"id": 1},
    "list_tasks": {
        "kind": KIND,
        "status": "cancelled",
        "key_prefix": "key-",
        "before_id": None,
        "limit": 50,
    },
    "list_tasks_by_payload": {
        "kind": KIND,
        "status": None,
        "key_prefix": None,
        "before_id": 1_000_000,
        "limit": 50,
        "payload_contains": '{"n": 1}',
        "scan": PAYLOAD_SCAN_ROWS,
    },
    "pause_kind": {"kind": KIND, "registered": True},
    "resume_kind": {"kind": KIND, "registered": False},
    "kind_exists": {"kind": KIND},
    "kind_overview": {"exact_below": EXACT_FINISHED_BELOW},  # plus the schema's name
    "find_sweepable_kinds": {"kinds": [KIND], "ttls": [0.0], "windows": [7 * 86_400.0]},
    "register_kind_row": {"kind": KIND},
    "lock_kind_for_sweep": {"kind": KIND, "period": 1.0},
    "sweep_terminal_tasks": {"kind": KIND, "ttl": 0.0, "limit": 10},
    "prune_throughput": {"kind": KIND, "window": 7 * 86_400.0},
    "mark_kind_swept": {"kind": KIND},
    "read_throughput": {"kind": KIND, "minutes": 60},
    "insert_audit_entries": {
        "entries": '[{"actor": "alice", "source": "cli", "action": "cancel_task", '
        '"kind": null, "task_id": 1, "detail": {"n": 1}, "rows": 1}]'
    },
    "list_audit_entries": {
        "before_id": None,
        "kind": KIND,
        "source": "cli",
        "action": "cancel_task",
        "limit": 10,
    },
    "prune_audit_log": {"kind": KIND, "window": 7 * 86_400.0},
    "push_periodic_task": {
        "kind": KIND,
        "slot": datetime(2030, 1, 1, tzinfo=UTC),
        "payload": None,
        "external_key": "periodic:2030-01-01T00:00:00+00:00",
        "max_attempts": 3,
        "priority": 5,
    },
    "database_now": {},
    "count_tasks_by_status": {},
    "read_table_health": {},
    "tasks_need_statistics": {"min_changes": 1000},
    "analyze_tasks": {},
    "find_pushed_tasks": {
        "kind": KIND,
        "match_key": False,
        "external_key": None,
        "match_payload": True,
        "payload": '{"n": 1}',
    },
    "listener_ping": {"payload": "h:" + "0" * 32},
    "schema_objects": {},
    "schema_revision": {},
    "replica_lag": {},
    "server_identity": {},
    "list_keyed_tasks": {"after": 0, "limit": 100},
    "add_kind_limits_row": {"kind": KIND},
    "lock_kind_limits": {"kind": KIND},
    "lock_kind_limits_shared": {"kind": KIND},
    "lock_claim_groups": {
        "kind": KIND,
        "group_concurrency": 1,
        "scan": 100,
        "groups": 10,
        "lock_prefix": "conformance:group:",
    },
    "claim_limited_tasks": {
        "kind": KIND,
        "limit": 10,
        "lease": 30.0,
        "rate": 50.0,
        "burst": 50.0,
        "global_concurrency": 5,
        "group_concurrency": 1,
        "counts_slots": True,
        "group_rate": 0.5,
        "group_burst": 2.0,
        "scan": 100,
        "groups": ["g1", "g2"],
        "prepaid": 2,
        "reserve": 3,
        "max_wait": 1.0,
    },
    "set_kind_limits": {
        "kind": KIND,
        "rate": 10.0,
        "rate_per": 1.0,
        "rate_burst": 10,
        "set_rate": True,
        "global_concurrency": None,
        "set_global": False,
        "group_concurrency": 2,
        "set_group": True,
        "group_rate": None,
        "group_rate_per": None,
        "group_rate_burst": None,
        "set_group_rate": False,
        "actor": "conformance",
        "change": json.dumps({"rate_limit": {"n": 10, "per": 1.0, "burst": 10}}),
    },
    "read_kind_limits": {"kinds": [KIND]},
    "list_limit_changes": {"kind": KIND, "limit": 20},
}


class RolledBack(Exception):
    """Raised at the end of an operation so its transaction rolls back."""

    def __init__(self, results: dict[str, list[Any]]) -> None:
        super().__init__("rolled back on purpose")
        self.results = results


def statement_params(queries: Queries, name: str) -> dict[str, Any]:
    params = dict(STATEMENT_PARAMS[name])
    if "%(channel)s" in queries[name]:
        params["channel"] = queries.channel
    if "%(finished_channel)s" in queries[name]:
        params["finished_channel"] = queries.finished_channel
    if "%(schema)s" in queries[name]:
        params["schema"] = queries.schema
    return params


def test_every_named_statement_has_conformance_parameters() -> None:
    queries = Queries("conformance")
    missing = sorted(set(queries.names()) - set(STATEMENT_PARAMS))
    assert not missing, f"add parameters for {missing} to STATEMENT_PARAMS"
    assert not set(STATEMENT_PARAMS) - set(queries.names()), "parameters of a removed statement"
    for name in queries.names():
        used = set(re.findall(r"%\((\w+)\)s", queries[name]))
        assert used == set(statement_params(queries, name)), name


async def test_every_named_statement_runs_inside_begin_rollback(
    driver: Driver, db: Database
) -> None:
    queries = Queries(db.schema)

    def steps() -> Steps[None]:
        results: dict[str, list[Any]] = {}
        # schema_revision reads the version table `pgqueue migrate` creates; the test schema
        # comes from the DDL alone, so make one here (rolled back with the rest).
        yield Statement(
            f"CREATE TABLE {queries.schema}.pgqueue_alembic_version"
            " (version_num varchar(32) PRIMARY KEY)",
            {},
        )
        order = list(STATEMENT_PARAMS)  # pushes first, then what works on the pushed rows
        for name in sorted(queries.names(), key=order.index):
            results[name] = yield Statement(queries[name], statement_params(queries, name))
        raise RolledBack(results)

    with pytest.raises(RolledBack) as rolled:
        await driver.run(Operation(steps(), transactional=True))
    results = rolled.value.results
    assert len(results["push_task"]) == 1  # a new key inserts
    assert len(results["claim_due_tasks"]) == 3  # the due tasks pushed above, not the delayed
    assert results["database_now"][0][0].tzinfo is not None
    assert db.scalar("SELECT count(*) FROM {schema}.tasks") == 0  # all rolled back
    assert db.scalar("SELECT count(*) FROM {schema}.kinds") == 0


async def test_notify_round_trip(driver: Driver, db: Database) -> None:
    queries = Queries(db.schema)
    registry = KindRegistry()
    registry.add(KIND, KindOptions(attempt_timeout=5.0), None)
    async with driver.listen(queries.channel) as payloads:
        await driver.run(push_tasks(registry, queries, [Task(KIND)]))
        async with asyncio.timeout(10):
            payload = await anext(payloads)
    # n:<due epoch>:<kind>: the task is due since the push's transaction began.
    prefix, epoch, kind = payload.split(":", 2)
    assert (prefix, kind) == ("n", KIND)
    assert abs(float(epoch) - time.time()) < 60


async def test_host_transaction_commits_or_rolls_back_the_push(
    driver: Driver, db: Database
) -> None:
    queries = Queries(db.schema)
    registry = KindRegistry()
    registry.add(KIND, KindOptions(attempt_timeout=5.0), None)
    async with driver.host_tx(False) as tx:
        [gone] = await driver.run_in(tx, push_tasks(registry, queries, [Task(KIND, 1)]))
    async with driver.host_tx(True) as tx:
        [kept] = await driver.run_in(tx, push_tasks(registry, queries, [Task(KIND, 2)]))
    assert isinstance(gone, int) and isinstance(kept, int)
    assert await driver.run(get_task(queries, gone)) is None
    info = await driver.run(get_task(queries, kept))
    assert info is not None and info.payload == 2


async def test_errors_surface_unchanged_and_leave_the_executor_usable(
    driver: Driver, db: Database
) -> None:
    queries = Queries(db.schema)
    registry = KindRegistry()
    registry.add(KIND, KindOptions(attempt_timeout=5.0, max_pending=1), None)
    await driver.run(push_tasks(registry, queries, [Task(KIND, 1)]))

    # pgqueue's own error, raised between statements of a transactional operation, comes out
    # as itself, and what the operation did before it is rolled back.
    with pytest.raises(CapacityExceeded):
        await driver.run(push_tasks(registry, queries, [Task(KIND, 2)]))
    assert db.scalar("SELECT count(*) FROM {schema}.tasks") == 1

    # A failing statement raises the driver's error; the connection it ran on stays usable.
    for _ in range(3):  # more often than a pool has connections
        with pytest.raises(Exception, match="division by zero") as failed:
            await driver.run(single(Statement("SELECT 1 / %(zero)s", {"zero": 0})))
        assert not isinstance(failed.value, CapacityExceeded)
    counts = await driver.run(count_tasks_by_status(queries))
    assert counts == {(KIND, "new"): 1}


async def test_claim_statement_uses_the_open_tasks_index(driver: Driver, db: Database) -> None:
    queries = Queries(db.schema)
    db.fetch(
        """INSERT INTO {schema}.tasks (kind, status, attempts_left, max_attempts, delayed_till,
               finished_at)
           SELECT 'k', CASE WHEN g % 2 = 0 THEN 'succeeded' ELSE 'new' END::{schema}.task_status,
                  1, 1, now() + interval '1 day', now()
           FROM generate_series(1, 20000) g"""
    )
    db.fetch("ANALYZE {schema}.tasks")
    rows = await driver.run(
        single(
            Statement(
                "EXPLAIN (FORMAT JSON) " + queries["claim_due_tasks"],
                {"kind": "k", "limit": 10, "lease": 30.0, "floor": None},
            )
        )
    )
    plan = rows[0][0]
    plan = plan if isinstance(plan, str) else json.dumps(plan)
    assert "tasks_open_idx" in plan, plan
    assert '"Seq Scan"' not in plan, plan


ODD_ERROR = 'ValueError: a "quoted", {braced} \\ back\\slashed, comma-separated NULL\nline'
ODD_RESULT = json.dumps({"text": 'x"y\\z', "list": [1, None, "}{"], "null": None})


async def test_result_writes_carry_any_text_through_the_driver(
    driver: Driver, db: Database
) -> None:
    """A result write sends its outcomes as array literals it builds itself (texts quoted and
    escaped): errors and results with quotes, backslashes, braces, commas, a NULL-looking word
    and a newline arrive as written, beside statuses, delays and kept-message counts."""
    queries = Queries(db.schema)
    registry = KindRegistry()
    registry.add(KIND, KindOptions(attempt_timeout=5.0), None)
    await driver.run(push_tasks(registry, queries, [Task(KIND, n) for n in range(4)]))
    claimed = await driver.run(claim_due_tasks(queries, KIND, 10, 30.0))
    (a, ta), (b, tb), (c, tc), (d, td) = sorted((row[0], row[6]) for row in claimed)
    results = [
        Result(a, ta, KIND, Outcome(Status.MUST_RETRY, delay=1.5, error=ODD_ERROR), 5, False),
        Result(b, tb, KIND, Outcome(Status.SUCCEEDED, result=ODD_RESULT), 5, False),
        Result(c, tc, KIND, Outcome(Status.SUCCEEDED), 5, False),
        Result(d, td, KIND, Outcome(Status.SUCCEEDED, result=ODD_RESULT), 5, True),
    ]
    applied = await driver.run(record_results(queries, results))
    assert applied == {a, b, c, d}
    rows = db.fetch(
        "SELECT id, status::text, messages, result::text,"
        " round(extract(epoch FROM delayed_till - updated_at)::numeric, 1)"
        " FROM {schema}.tasks ORDER BY id"
    )
    assert [(r[0], r[1]) for r in rows] == [(a, "must_retry"), (b, "succeeded"), (c, "succeeded")]
    assert rows[0][2] == [ODD_ERROR]
    assert float(rows[0][4]) == 1.5
    assert json.loads(rows[1][3]) == json.loads(ODD_RESULT)
    assert rows[2][3] is None
