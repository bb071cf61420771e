"""Fast tests without a database."""

from __future__ import annotations

import asyncio
import random
import re
from datetime import UTC, datetime, timedelta

import pytest

import pgqueue
from pgqueue import (
    Decision,
    ExpBackoffDelayer,
    InvalidOptions,
    Jitter,
    JitterDelayer,
    KindOptions,
    LoopOptions,
    Status,
)
from pgqueue.envelope import Envelope
from pgqueue.options import terminal_ttl_of, worker_count_of
from pgqueue.runtime.execution import decide, describe_error
from pgqueue.store.queries import Queries, parse_queries, schema_ddl, validate_schema_name


def test_all_is_complete_and_sorted() -> None:
    public = {
        name
        for name, value in vars(pgqueue).items()
        if not name.startswith("_") and isinstance(value, type)
    }
    assert public <= set(pgqueue.__all__)
    assert pgqueue.__all__ == sorted(pgqueue.__all__)
    for name in pgqueue.__all__:
        assert hasattr(pgqueue, name)


def test_every_query_is_named_described_and_uses_named_parameters() -> None:
    queries = Queries("pgqueue")
    assert "claim_due_tasks" in queries.names()
    for name in queries.names():
        sql = queries[name]
        assert "__schema__" not in sql
        assert not re.search(r"\$\d", sql), f"{name} uses positional parameters"
        assert not re.search(r"%s\b", sql), f"{name} uses positional parameters"


def test_query_parser_rejects_undescribed_and_duplicate_queries() -> None:
    with pytest.raises(ValueError, match="description"):
        parse_queries("-- name: a\nSELECT 1;\n")
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\n-- d\nSELECT 1;\n-- name: a\n-- d\nSELECT 2;\n")
    parsed = parse_queries("-- name: a\n-- First.\n-- Second.\nSELECT 1;\n")
    assert parsed["a"].description == "First. Second." and parsed["a"].sql == "SELECT 1"


def test_a_spliced_statement_is_the_named_one_bound_to_the_schema() -> None:
    queries = Queries("tenant_a")
    kind_exists = queries["kind_exists"]
    for name in ("pause_kind", "resume_kind"):
        assert "__query:" not in queries[name]
        assert f"({kind_exists})" in queries[name]
    assert "tenant_a.tasks" in kind_exists and "__schema__" not in queries["pause_kind"]


@pytest.mark.parametrize("bad", ["", "Public", "a-b", "a;drop", "1abc", "x" * 64, None])
def test_schema_names_are_validated(bad: object) -> None:
    with pytest.raises(InvalidOptions):
        validate_schema_name(bad)  # type: ignore[arg-type]
    assert "CREATE TABLE jobs.tasks" in schema_ddl("jobs")


def test_jitter_delayer_bounds() -> None:
    rng = random.Random(7)
    equal = JitterDelayer(Jitter.EQUAL, base=2.0, rng=rng)
    full = JitterDelayer(Jitter.FULL, base=2.0, rng=rng)
    zero = JitterDelayer(Jitter.ZERO, base=2.0)
    for attempt in range(1, 50):
        assert 1.0 <= equal.delay(attempt) <= 2.0
        assert 0.0 <= full.delay(attempt) <= 2.0
        assert zero.delay(attempt) == 2.0


def test_exp_backoff_with_float_factor_caps_at_max() -> None:
    delayer = ExpBackoffDelayer(Jitter.ZERO, base=0.5, max=10.0, factor=1.5)
    assert [delayer.delay(a) for a in (1, 2, 3)] == [0.5, 0.75, 1.125]
    assert delayer.delay(100) == 10.0
    assert delayer.delay(10_000) == 10.0  # no overflow
    with pytest.raises(InvalidOptions):
        ExpBackoffDelayer(factor=0.5)
    with pytest.raises(InvalidOptions):
        ExpBackoffDelayer(base=-1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempt_timeout": 0},
        {"attempt_timeout": -1},
        {"attempt_timeout": "5"},
        {"attempt_timeout": float("nan")},
        {"attempt_timeout": 1, "worker_count": -1},
        {"attempt_timeout": 1, "worker_count": lambda: "many"},
        {"attempt_timeout": 1, "max_attempts": 0},
        {"attempt_timeout": 1, "max_task_error_messages": -1},
        {"attempt_timeout": 1, "terminal_tasks_ttl": -5},
        {"attempt_timeout": 1, "max_pending": 0},
        {"attempt_timeout": 1, "loop": LoopOptions(claim_batch_size=0)},
        {"attempt_timeout": 1, "delayer": object()},
        {"attempt_timeout": 1, "before": "not callable"},
    ],
)
def test_kind_options_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidOptions):
        KindOptions(**kwargs).validate()  # type: ignore[arg-type]


def test_providers_are_re_read() -> None:
    size = {"n": 3}
    options = KindOptions(
        attempt_timeout=timedelta(seconds=2),
        worker_count=lambda: size["n"],
        terminal_tasks_ttl=lambda: timedelta(minutes=1),
    ).validate()
    assert worker_count_of(options) == 3
    size["n"] = 7
    assert worker_count_of(options) == 7
    assert terminal_ttl_of(options) == 60.0
    assert options.lease_seconds == options.loop.lease_margin


def envelope(attempt: int = 1, left: int = 2) -> Envelope:
    return Envelope(
        id=1,
        kind="k",
        payload=None,
        external_key=None,
        attempt=attempt,
        attempts_left=left,
        max_attempts=attempt + left,
        deadline=datetime.now(UTC),
        monotonic_deadline=0.0,
        messages=[],
    )


def test_a_claimed_envelope_has_the_same_fields_and_deadline() -> None:
    claimed_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    given = Envelope(
        id=7,
        kind="k",
        payload={"a": 1},
        external_key="x",
        attempt=2,
        attempts_left=1,
        max_attempts=3,
        deadline=claimed_at + timedelta(seconds=30.5),
        monotonic_deadline=12.0,
        messages=["E: boom"],
    )
    claimed = Envelope.claimed(7, "k", {"a": 1}, "x", 2, 1, 3, claimed_at, 30.5, 12.0, ["E: boom"])
    public = [name for name in Envelope.__slots__ if not name.startswith("_")]
    for name in (*public, "deadline", "previous_errors", "is_last_attempt", "cancel_requested",
                 "parents", "parent_statuses", "outcome_counts"):  # fmt: skip
        assert getattr(claimed, name) == getattr(given, name), name
    assert claimed.deadline is claimed.deadline  # worked out once
    assert repr(claimed) == repr(given)


def test_a_claimed_workflow_node_envelope_carries_its_node_trace_and_snoozes() -> None:
    claimed_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    outcomes = {"fetch": {"id": 3, "status": "succeeded", "result": [1, 2]}}
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    claimed = Envelope.claimed(
        7, "k", None, None, 1, 0, 1, claimed_at, 5.0, 1.0, [], 2, ["wf-1", "sum", outcomes], trace
    )
    assert (claimed.workflow_id, claimed.node, claimed.snoozes) == ("wf-1", "sum", 2)
    assert claimed.trace_context == trace
    assert claimed.parents == {"fetch": [1, 2]}
    assert claimed.parent_statuses == {"fetch": "succeeded"}
    assert claimed.deadline == claimed_at + timedelta(seconds=5.0)


@pytest.mark.parametrize(
    ("decision", "left", "status", "delay"),
    [
        (Decision.default(), 2, Status.MUST_RETRY, 3.0),
        (Decision.default(), 0, Status.NO_ATTEMPTS_LEFT, 0.0),
        (Decision.retry_now(), 2, Status.MUST_RETRY, 0.0),
        (Decision.retry_after(42), 2, Status.MUST_RETRY, 42.0),
        (Decision.retry_after(42), 0, Status.NO_ATTEMPTS_LEFT, 0.0),
        (Decision.drop(), 2, Status.NO_ATTEMPTS_LEFT, 0.0),
        (Decision.cancel(), 2, Status.CANCELLED, 0.0),
        (Decision.cancel(), 0, Status.CANCELLED, 0.0),
    ],
)
def test_decisions_map_to_transitions(
    decision: Decision, left: int, status: Status, delay: float
) -> None:
    outcome = decide(decision, envelope(left=left), "E: x", lambda attempt: 3.0)
    assert (outcome.status, outcome.delay, outcome.error) == (status, delay, "E: x")


def test_retry_after_rejects_negative_delay() -> None:
    with pytest.raises(ValueError):
        Decision.retry_after(-1)


def test_describe_error_survives_a_broken_str() -> None:
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert describe_error(Nasty()) == "Nasty: <unprintable error>"
    assert describe_error(ValueError("bad")) == "ValueError: bad"
    assert describe_error(KeyError()) == "KeyError"


def test_sync_thread_pool_carries_keyboard_interrupt_as_an_error() -> None:
    from pgqueue.runtime.threads import SyncThreadPool, ThreadInterrupt

    def interrupt() -> None:
        raise KeyboardInterrupt

    async def main() -> None:
        pool = SyncThreadPool(2)
        assert await pool.submit(asyncio.get_running_loop(), lambda: 41 + 1) == 42
        with pytest.raises(ThreadInterrupt):
            await pool.submit(asyncio.get_running_loop(), interrupt)
        pool.close()

    asyncio.run(main())


def test_interval_slots_align_to_the_epoch() -> None:
    from pgqueue.periodic import Schedule

    schedule = Schedule(every=60)
    now = datetime(2026, 11, 22, 12, 34, 56, tzinfo=UTC)
    assert schedule.latest_slot(now) == datetime(2026, 11, 22, 12, 34, tzinfo=UTC)
    assert schedule.next_slot(now) == datetime(2026, 11, 22, 12, 35, tzinfo=UTC)
    assert schedule.latest_slot(schedule.latest_slot(now)) == schedule.latest_slot(now)


def test_cron_slots_across_a_dst_change() -> None:
    from pgqueue.periodic import Schedule

    utc = UTC
    # New York springs forward on 2026-03-08: 02:00 EST becomes 03:00 EDT.
    hourly = Schedule(cron="0 * * * *", tz="America/New_York")
    slot = datetime(2026, 3, 8, 5, 30, tzinfo=utc)  # 00:30 EST
    slots = []
    for _ in range(4):
        slot = hourly.next_slot(slot)
        slots.append(slot)
    # 01:00 EST, 03:00 EDT, 04:00 EDT, 05:00 EDT: one hour apart in UTC, no 02:00 slot.
    assert slots == [datetime(2026, 3, 8, h, tzinfo=utc) for h in (6, 7, 8, 9)]
    # A daily job at 09:00 local keeps 09:00 local across the change (14:00 → 13:00 UTC).
    daily = Schedule(cron="0 9 * * *", tz="America/New_York")
    before = daily.next_slot(datetime(2026, 3, 7, 0, tzinfo=utc))
    after = daily.next_slot(before)
    assert (before, after) == (
        datetime(2026, 3, 7, 14, tzinfo=utc),
        datetime(2026, 3, 8, 13, tzinfo=utc),
    )
    assert daily.latest_slot(after) == after
    assert daily.latest_slot(after + timedelta(hours=1)) == after


@pytest.mark.parametrize(
    ("dsn", "url"),
    [
        ("postgresql://u@h:5/db", "postgresql+psycopg://u@h:5/db"),
        ("postgres://u@h/db?sslmode=require", "postgresql+psycopg://u@h/db?sslmode=require"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        (
            "host=/tmp/x dbname=app user=me",
            "postgresql+psycopg://?dbname=app&host=%2Ftmp%2Fx&user=me",
        ),
    ],
)
def test_sqlalchemy_url_accepts_urls_and_key_value_dsns(dsn: str, url: str) -> None:
    from pgqueue.migrate import sqlalchemy_url

    assert sqlalchemy_url(dsn) == url
