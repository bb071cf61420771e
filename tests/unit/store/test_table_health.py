"""What ``TableHealth.problems`` reports, from figures alone."""

from __future__ import annotations

from pgqueue.store.operations import TableHealth
from pgqueue.store.operations.health import MIN_DEAD_ROWS


def figures(**changes: object) -> TableHealth:
    values: dict[str, object] = {
        "schema": "pgqueue",
        "dead_rows": 0,
        "live_rows": 10_000,
        "table_bytes": 8192,
        "total_bytes": 16384,
        "server_autovacuum": True,
        "table_autovacuum": True,
        "vacuum_trigger": 150.0,
        "last_vacuum": None,
    }
    values.update(changes)
    return TableHealth(**values)  # type: ignore[arg-type]


def test_a_table_vacuum_keeps_up_with_has_no_problem() -> None:
    assert figures(dead_rows=5_000).problems == []


def test_dead_rows_far_past_the_trigger_point_at_a_long_transaction() -> None:
    [problem] = figures(dead_rows=MIN_DEAD_ROWS + 1).problems
    assert "100,001 dead rows" in problem
    assert "pg_stat_activity" in problem and "idle_in_transaction_session_timeout" in problem


def test_few_dead_rows_are_no_problem_even_past_the_trigger() -> None:
    assert figures(dead_rows=MIN_DEAD_ROWS - 1, vacuum_trigger=10.0).problems == []


def test_autovacuum_off_on_the_server_is_one_problem_whatever_the_dead_rows() -> None:
    [problem] = figures(server_autovacuum=False, dead_rows=10**7).problems
    assert problem.startswith("autovacuum is off on this server")
    assert "autovacuum = on" in problem and "VACUUM pgqueue.tasks" in problem


def test_autovacuum_off_for_the_table() -> None:
    [problem] = figures(table_autovacuum=False).problems
    assert "ALTER TABLE pgqueue.tasks RESET (autovacuum_enabled)" in problem
