"""The sans-I/O parts of the operations layer, without a database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pgqueue import InvalidOptions, LoopOptions, Status
from pgqueue.metrics import _OUTCOME_OF_STATUS, OUTCOMES
from pgqueue.runtime.completer import Result, record_results, retried_at_once
from pgqueue.runtime.execution import Outcome
from pgqueue.store.operations import KindOverview, list_tasks, read_throughput
from pgqueue.store.queries import Queries
from pgqueue.task import COUNTED_STATUSES


def result(task_id: int, kind: str, status: Status, delay: float = 0.0) -> Result:
    return Result(task_id, "t", kind, Outcome(status, delay), 3, False, 0.0)


def test_result_statements_carry_outcomes_into_the_rollup() -> None:
    queries = Queries("s")
    results = [
        Result(1, "11111111-1111-1111-1111-111111111111", "a", Outcome(Status.SUCCEEDED), 3,
               True, 0.0),
        Result(2, "22222222-2222-2222-2222-222222222222", "a", Outcome(Status.MUST_RETRY, 5.0),
               3, False, 0.0),
    ]  # fmt: skip
    steps = record_results(queries, results).steps
    delete = next(steps)
    assert delete.params["statuses"] == "{succeeded}"  # array literals: see test_array_literals
    assert "INSERT INTO s.throughput" in delete.sql
    update = steps.send([(1,)])
    assert update.params["statuses"] == "{must_retry}"
    assert update.params["delays"] == "{5.0}"
    assert update.params["keeps"] == "{3}"
    assert update.params["errors"] == "{NULL}"
    assert update.params["results"] is None  # no result: NULL, which unnest pads
    assert "INSERT INTO s.throughput" in update.sql
    with pytest.raises(StopIteration) as done:
        steps.send([(2,)])
    assert done.value.value == {1, 2}  # a delayed retry wakes nobody: no NOTIFY statement


def test_only_applied_retries_due_at_once_wake_their_kind() -> None:
    results = [
        result(1, "now", Status.MUST_RETRY, 0.0),
        result(2, "later", Status.MUST_RETRY, 3.0),
        result(3, "lost", Status.MUST_RETRY, 0.0),
        result(4, "done", Status.SUCCEEDED),
    ]
    assert retried_at_once(results, {1, 2, 4}) == ["now"]


def test_kind_overview_merges_rows() -> None:
    paused_at = datetime(2026, 1, 1, tzinfo=UTC)
    overview = KindOverview.from_rows(
        [
            ("a", "new", 5, 3, 12.5, False, None),
            ("a", "processing", 2, 0, None, False, None),
            ("a", "processing", 1, 0, None, False, None),
            ("a", "must_retry", 4, 1, 30.0, False, None),
            ("a", "blocked", 2, 0, None, False, None),
            ("a", "succeeded", 1000, 0, None, True, None),
            ("a", None, 0, 0, None, False, paused_at),
            ("b", None, 0, 0, None, False, None),
        ]
    )
    assert overview.kinds == {"a", "b"}
    assert overview.counts_of("a") == {
        "new": 5,
        "must_retry": 4,
        "no_attempts_left": 0,
        "blocked": 2,
        "processing": 3,
        "due": 4,
        "cancelled": 0,
        "succeeded": 1000,
    }
    assert overview.oldest_due == {"a": 30.0}
    assert overview.paused == {"a": paused_at}
    assert overview.estimated
    assert set(overview.counts_of("b")) == set(COUNTED_STATUSES)


def test_operation_inputs_are_checked_before_any_sql() -> None:
    queries = Queries("s")
    with pytest.raises(ValueError, match="minutes"):
        read_throughput(queries, minutes=10**9)
    with pytest.raises(ValueError, match="the limit is 512"):
        list_tasks(queries, key_prefix="x" * 600)
    op = list_tasks(queries, kind="k", status="processing", payload_contains={"a": 1})
    statement = next(op.steps)
    assert statement.params["payload_contains"] == '{"a":1}'
    assert statement.params["scan"] == 10_000


def test_every_attempt_status_has_a_metric_outcome() -> None:
    assert set(_OUTCOME_OF_STATUS.values()) | {"timed_out"} == set(OUTCOMES)


def test_throughput_window_is_validated() -> None:
    with pytest.raises(InvalidOptions):
        LoopOptions(throughput_window=0).validate()


@pytest.mark.parametrize(
    ("status", "conjunct"),
    [
        ("no_attempts_left", "AND status = 'no_attempts_left' --"),
        ("new", "AND status = 'new' --"),
        ("succeeded", "AND status = 'succeeded' --"),
        ("processing", "AND claim_token IS NOT NULL --"),
    ],
)
def test_a_status_filter_reaches_the_planner_as_a_literal(status: str, conjunct: str) -> None:
    """A partial index serves a status filter only when the planner sees the status as a
    constant (a filter on no_attempts_left once walked a million rows newest first)."""
    for payload in (None, {"a": 1}):
        statement = next(
            list_tasks(Queries("s"), kind="k", status=status, payload_contains=payload).steps
        )
        assert conjunct in statement.sql
        assert statement.params["status"] == status  # the derived-status test still applies
    plain = next(list_tasks(Queries("s"), kind="k").steps)
    assert "AND status =" not in plain.sql
