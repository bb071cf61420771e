"""A stateful property test of the status model (SPEC §2) on the real database.

Hypothesis drives random sequences of push, claim, succeed / fail / timeout / cancel results
(also with stale claim tokens), heartbeat renewals, releases (abort), lease expiry, cancel by
key, retry of exhausted tasks and the retention sweep, through the same named statements the
runtime runs, and checks after every step that each row matches a plain model of the status
table and that every transition applied exactly once (and a stale claim never applied).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from pgqueue import KindOptions, Task
from pgqueue.adapters.psycopg import PsycopgExecutor
from pgqueue.registry import KindRegistry
from pgqueue.runtime.completer import Result, record_results
from pgqueue.runtime.execution import Outcome
from pgqueue.store.executor import Statement, single
from pgqueue.store.operations import (
    bare_array,
    cancel_task_by_key,
    int_array,
    push_tasks,
    retry_tasks,
    sweep_terminal_tasks,
)
from pgqueue.store.queries import Queries
from pgqueue.task import Status
from tests.conftest import Database

EXAMPLES = int(os.environ.get("PGQUEUE_STATE_MACHINE_EXAMPLES", "200"))
LEASE = 3600.0  # leases end only when a rule expires them


@dataclass
class Row:
    key: str
    status: str = "new"
    left: int = 0
    elapsed: int = 0
    token: str | None = None
    leased: bool = False  # claimed and the lease has not ended
    tokens: list[str] = field(default_factory=list)  # every token ever handed out


class StatusModel(RuleBasedStateMachine):
    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        self.queries = Queries(db.schema)
        self.registry = KindRegistry()
        self.registry.add("k", KindOptions(attempt_timeout=5, max_attempts=2), None)
        self.executor = PsycopgExecutor(db.dsn, max_size=2)
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {db.schema}.tasks, {db.schema}.kinds")
        self.rows: dict[int, Row] = {}
        self.pushed = 0

    def teardown(self) -> None:
        self.executor.close()

    def _run(self, sql_name: str, params: dict[str, object]) -> list[tuple[object, ...]]:
        return self.executor.run(single(Statement(self.queries[sql_name], params)))

    @rule()
    def push(self) -> None:
        self.pushed += 1
        key = f"t{self.pushed}"
        (task_id,) = self.executor.run(
            push_tasks(self.registry, self.queries, [Task("k", external_key=key)])
        )
        assert task_id is not None and task_id not in self.rows
        self.rows[task_id] = Row(key, left=2)

    @rule(data=st.data())
    def push_duplicate(self, data: st.DataObject) -> None:
        live = [r.key for r in self.rows.values()]
        if not live:
            return
        key = data.draw(st.sampled_from(live))
        (task_id,) = self.executor.run(
            push_tasks(self.registry, self.queries, [Task("k", external_key=key)])
        )
        assert task_id is None  # a key is accepted once while its row exists

    @rule()
    def claim(self) -> None:
        rows = self._run(
            "claim_due_tasks", {"kind": "k", "limit": 1000, "lease": LEASE, "floor": None}
        )
        due = {
            i for i, r in self.rows.items() if r.status in ("new", "must_retry") and not r.leased
        }
        assert {row[0] for row in rows} == due
        for row in rows:
            model = self.rows[row[0]]  # type: ignore[index]
            model.status = "no_attempts_left" if model.left <= 1 else "must_retry"
            model.left = max(model.left - 1, 0)
            model.elapsed += 1
            model.token = str(row[6])
            model.tokens.append(model.token)
            model.leased = True
            assert row[4] == model.left and row[3] == model.elapsed

    @rule(
        data=st.data(),
        outcome=st.sampled_from(["succeed", "fail", "timeout", "cancel"]),
        stale=st.booleans(),
    )
    def finish(self, data: st.DataObject, outcome: str, stale: bool) -> None:
        """An attempt's result, written with its claim's token (or an older one)."""
        held = [(i, r) for i, r in self.rows.items() if r.tokens]
        if not held:
            return
        task_id, model = data.draw(st.sampled_from(held))
        token = data.draw(st.sampled_from(model.tokens)) if stale else model.tokens[-1]
        left_at_claim = model.left  # what the envelope said when the attempt ran
        if outcome == "succeed":
            status = Status.SUCCEEDED
        elif outcome == "cancel":
            status = Status.CANCELLED
        else:
            status = Status.MUST_RETRY if left_at_claim > 0 else Status.NO_ATTEMPTS_LEFT
        error = None if outcome == "succeed" else f"{outcome}!"
        result = Result(task_id, token, "k", Outcome(status, 0.0, error), 3, False)
        applied = self.executor.run(record_results(self.queries, [result]))
        expected = token == model.token
        assert (task_id in applied) == expected
        if expected:
            model.status = status.value
            model.token = None
            model.leased = False
            if status is Status.NO_ATTEMPTS_LEFT:
                model.left = 0

    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        held = [(i, r) for i, r in self.rows.items() if r.tokens]
        if not held:
            return
        task_id, model = data.draw(st.sampled_from(held))
        token = data.draw(st.sampled_from(model.tokens))
        rows = self._run(
            "extend_leases",
            {"ids": int_array([task_id]), "tokens": bare_array([token]), "lease": LEASE},
        )
        assert bool(rows) == (token == model.token)
        if rows:
            model.leased = True

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        """stop(ABORT): the claim handed back, its attempt refunded."""
        held = [(i, r) for i, r in self.rows.items() if r.tokens]
        if not held:
            return
        task_id, model = data.draw(st.sampled_from(held))
        token = data.draw(st.sampled_from(model.tokens))
        rows = self._run(
            "release_claims", {"ids": int_array([task_id]), "tokens": bare_array([token])}
        )
        assert bool(rows) == (token == model.token)
        if rows:
            model.status = "new" if model.elapsed <= 1 else "must_retry"
            model.left += 1
            model.elapsed = max(model.elapsed - 1, 0)
            model.token = None
            model.leased = False

    @rule(data=st.data())
    def lease_expires(self, data: st.DataObject) -> None:
        """The process holding a claim died: its lease ends."""
        leased = [i for i, r in self.rows.items() if r.leased]
        if not leased:
            return
        task_id = data.draw(st.sampled_from(leased))
        self.db.fetch(
            "UPDATE {schema}.tasks SET delayed_till = now() - interval '1 second' WHERE id = %s",
            (task_id,),
        )
        self.rows[task_id].leased = False

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if not self.rows:
            return
        _, model = data.draw(st.sampled_from(sorted(self.rows.items())))
        cancelled = self.executor.run(
            cancel_task_by_key(self.registry, self.queries, "k", model.key)
        )
        cancellable = model.status in ("new", "must_retry") or (
            model.status == "no_attempts_left" and model.token is not None
        )
        assert cancelled == cancellable
        if cancellable:
            model.status = "cancelled"
            model.token = None
            model.leased = False

    @rule(attempts=st.integers(min_value=1, max_value=3))
    def retry(self, attempts: int) -> None:
        revived = self.executor.run(retry_tasks(self.registry, self.queries, "k", attempts, 1000))
        expected = [
            r
            for r in self.rows.values()
            if r.status == "no_attempts_left" and (r.token is None or not r.leased)
        ]
        assert revived == len(expected)
        for model in expected:
            model.status = "must_retry"
            model.left = attempts
            model.token = None
            model.leased = False

    @rule()
    def sweep(self) -> None:
        deleted = self.executor.run(sweep_terminal_tasks(self.queries, "k", 0, 0, 1000))
        terminal = [i for i, r in self.rows.items() if r.status in ("succeeded", "cancelled")]
        assert deleted == len(terminal)
        for task_id in terminal:
            del self.rows[task_id]

    @invariant()
    def rows_match_the_model(self) -> None:
        stored = {
            row[0]: row[1:]
            for row in self.db.fetch(
                "SELECT id, status::text, attempts_left, attempts_elapsed, claim_token::text,"
                " claim_token IS NOT NULL AND delayed_till > now() FROM {schema}.tasks"
            )
        }
        model = {
            i: (r.status, r.left, r.elapsed, r.token, r.token is not None and r.leased)
            for i, r in self.rows.items()
        }
        assert stored == model


def test_status_model_against_the_database(db: Database) -> None:
    run_state_machine_as_test(
        lambda: StatusModel(db),
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=20,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
