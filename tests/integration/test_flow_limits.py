"""Fleet-wide limits decided in the database: the limited claim against a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pgqueue import KindOptions, Queue, RateLimit, Task
from pgqueue.store import operations
from pgqueue.store.operations.limits import LimitedClaim
from pgqueue.store.queries import Queries
from tests.conftest import Database


def limited(queue: Queue, options: KindOptions, limit: int = 10) -> LimitedClaim:
    return queue.executor.run(
        operations.claim_limited_tasks(Queries(queue.schema), "k", limit, 30.0, options)
    )


def ids(claim: LimitedClaim) -> list[int]:
    return [row[0] for row in claim.rows]


@pytest.fixture
def queue(db: Database) -> Any:
    with Queue(db.dsn, schema=db.schema, max_connections=10) as queue:
        queue.declare_kind("k", KindOptions(attempt_timeout=5))
        yield queue


def test_concurrent_claimers_never_exceed_the_global_concurrency(
    queue: Queue, db: Database
) -> None:
    options = KindOptions(attempt_timeout=5, global_concurrency=5)
    queue.push_tasks([Task("k", n) for n in range(100)])
    claimed: list[int] = []
    barrier = threading.Barrier(8)

    def claimer() -> None:
        barrier.wait()
        for _ in range(5):
            claimed.extend(ids(limited(queue, options, limit=3)))

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == len(set(claimed)) == 5


def test_a_slot_frees_when_the_result_is_written_or_the_lease_is_lost(
    queue: Queue, db: Database
) -> None:
    options = KindOptions(attempt_timeout=5, global_concurrency=2)
    queue.push_tasks([Task("k", n) for n in range(10)])
    first = limited(queue, options)
    assert len(first.rows) == 2 and first.candidates == 3  # one more: work is left
    held = limited(queue, options)
    assert held.rows == [] and held.allowed == 0
    # A result written (the token cleared) frees one slot.
    db.fetch("UPDATE {schema}.tasks SET claim_token = NULL WHERE id = %s", (first.rows[0][0],))
    assert len(limited(queue, options).rows) == 1
    # A lost lease frees one too.
    db.fetch(
        "UPDATE {schema}.tasks SET delayed_till = now() - interval '1 second' WHERE id = %s",
        (first.rows[1][0],),
    )
    assert len(limited(queue, options).rows) == 1
    assert limited(queue, options).rows == []


def test_group_limits_leave_other_groups_and_ungrouped_tasks_flowing(
    queue: Queue, db: Database
) -> None:
    options = KindOptions(attempt_timeout=5, group_concurrency=1)
    pushed = queue.push_tasks(
        [Task("k", n, group="busy") for n in range(5)]
        + [Task("k", 10, group="other"), Task("k", 11), Task("k", 12)]
    )
    first = limited(queue, options)
    assert ids(first) == [pushed[0], pushed[5], pushed[6], pushed[7]]
    assert first.candidates == 8  # the busy group's other tasks were looked at, not claimed
    assert limited(queue, options).rows == []  # both groups hold their slot
    db.fetch("UPDATE {schema}.tasks SET claim_token = NULL WHERE id = %s", (pushed[0],))
    assert ids(limited(queue, options)) == [pushed[1]]


@pytest.mark.parametrize("per_group", [1, 2])
def test_concurrent_claimers_by_group_never_exceed_a_groups_slots(
    queue: Queue, db: Database, per_group: int
) -> None:
    """Claims of a kind limited by groups alone run at once (no kind-wide lock); each group's
    count stays exact under 8 claimers racing."""
    options = KindOptions(attempt_timeout=5, group_concurrency=per_group)
    queue.push_tasks(
        [Task("k", n, group=f"g{n % 6}") for n in range(120)] + [Task("k", n) for n in range(4)]
    )
    claimed: list[int] = []
    barrier = threading.Barrier(8)

    def claimer() -> None:
        barrier.wait()
        for _ in range(6):
            claimed.extend(ids(limited(queue, options, limit=4)))

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == len(set(claimed)) == 6 * per_group + 4
    per = db.fetch(
        "SELECT task_group, count(*) FROM {schema}.tasks WHERE claim_token IS NOT NULL"
        " GROUP BY task_group ORDER BY 1"
    )
    assert per == [(f"g{n}", per_group) for n in range(6)] + [(None, 4)]


def test_a_claim_by_group_reports_tasks_waiting_on_their_group(queue: Queue, db: Database) -> None:
    options = KindOptions(attempt_timeout=5, group_concurrency=1)
    queue.push_tasks([Task("k", n, group="g") for n in range(3)])
    first = limited(queue, options)
    assert len(first.rows) == 1 and not first.relock
    held = limited(queue, options)
    assert held.rows == [] and held.blocked  # the loop waits for the slot, not for a push


def test_a_noisy_groups_backlog_does_not_starve_the_groups_behind_it(
    queue: Queue, db: Database
) -> None:
    """A tenant with 2,000 older tasks holds its one slot; the next claim looks past its
    backlog and keeps the other tenants flowing."""
    options = KindOptions(attempt_timeout=5, group_concurrency=1)
    queue.push_tasks([Task("k", n, group="noisy") for n in range(2000)])
    quiet = queue.push_tasks([Task("k", n, group=f"quiet{n}") for n in range(5)])
    # The oldest due tasks are all the noisy group's: the first claim takes one of them (and
    # the claim loop claims again at once, since it took something).
    assert len(limited(queue, options, limit=10).rows) == 1
    second = limited(queue, options, limit=10)
    assert sorted(ids(second)) == quiet
    third = limited(queue, options, limit=10)
    assert third.rows == [] and third.blocked  # every group holds its slot: wait for one


def test_a_kind_wide_override_moves_claims_by_group_to_the_kinds_lock(
    queue: Queue, db: Database
) -> None:
    options = KindOptions(attempt_timeout=5, group_concurrency=1)
    queue.push_tasks([Task("k", n, group=f"g{n}") for n in range(10)])
    queue.set_limits("k", global_concurrency=2)
    moved = limited(queue, options)
    assert moved.relock and moved.rows == [] and moved.limits.global_concurrency == 2
    locked = queue.executor.run(
        operations.claim_limited_tasks(
            Queries(queue.schema), "k", 10, 30.0, options, by_group=False
        )
    )
    assert len(locked.rows) == 2 and not locked.relock
    queue.set_limits("k", global_concurrency=None)
    back = limited(queue, options)
    assert not back.relock and len(back.rows) == 8


def test_the_token_bucket_starts_full_and_refills_at_the_rate(queue: Queue, db: Database) -> None:
    options = KindOptions(attempt_timeout=5, rate_limit=RateLimit(10, per=1.0, burst=3))
    queue.push_tasks([Task("k", n) for n in range(20)])
    first = limited(queue, options)
    assert len(first.rows) == 3
    assert first.tokens is not None and first.tokens < 1
    # Two seconds ago, as far as the bucket knows: 20 tokens' worth, capped at the burst.
    db.fetch("UPDATE {schema}.kind_limits SET refilled_at = refilled_at - interval '2 seconds'")
    again = limited(queue, options)
    assert len(again.rows) == 3
    # Held-back tasks consumed no attempt.
    assert db.scalar("SELECT count(*) FROM {schema}.tasks WHERE attempts_elapsed = 0") == 14


def test_loops_out_of_tokens_reserve_the_next_ones_in_turn(queue: Queue, db: Database) -> None:
    """A claim that runs out of tokens while tasks wait reserves the next few (the bucket goes
    below zero): each loop learns when its own are due, so loops sharing a bucket come back
    one after another instead of all at once."""
    options = KindOptions(attempt_timeout=5, rate_limit=RateLimit(10, per=1.0, burst=3))
    queries = Queries(queue.schema)
    queue.push_tasks([Task("k", n) for n in range(20)])

    def claim(prepaid: int = 0) -> LimitedClaim:
        return queue.executor.run(
            operations.claim_limited_tasks(
                queries, "k", 5, 30.0, options, prepaid=prepaid, reserve=2, max_wait=1.0
            )
        )

    first = claim()
    assert len(first.rows) == 3 and first.reserved == 2
    assert 0.1 < first.due_in <= 0.2  # two tokens at 10/s, from an empty bucket
    second = claim()
    assert second.rows == [] and second.reserved == 2
    assert first.due_in < second.due_in <= 0.4  # behind the first loop's reservation
    # The first loop's reserved tokens are its own, whatever the bucket holds.
    mine = claim(prepaid=2)
    assert len(mine.rows) == 2 and mine.reserved == 2 and mine.due_in > second.due_in
    # Reservations reach no further than max_wait (10 tokens at 10/s): then a loop just waits.
    reservations = 0
    while claim().reserved:
        reservations += 1
        assert reservations < 10
    assert 1 <= reservations <= 3
    assert db.scalar("SELECT tokens FROM {schema}.kind_limits") >= -10 - 1
    assert db.scalar("SELECT count(*) FROM {schema}.tasks WHERE attempts_elapsed > 0") == 5


def test_an_unlimited_claim_does_not_mark_slots(queue: Queue, db: Database) -> None:
    queue.push_tasks([Task("k", n) for n in range(3)])
    queue.executor.run(operations.claim_due_tasks(Queries(queue.schema), "k", 3, 30.0))
    assert db.scalar("SELECT count(*) FROM {schema}.tasks WHERE holds_slot") == 0


def test_held_back_claims_are_counted_and_limits_shown_in_metrics(db: Database) -> None:
    from prometheus_client import CollectorRegistry

    from pgqueue import LoopOptions
    from pgqueue.metrics import instrument
    from tests.helpers import Recorder
    from tests.integration.test_metrics import samples, value

    registry = CollectorRegistry()
    release = threading.Event()
    options = KindOptions(
        attempt_timeout=10,
        worker_count=4,
        global_concurrency=1,
        rate_limit=RateLimit(100, per=1.0),
        loop=LoopOptions(poll_period=0.2),
    )
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", lambda envelope: release.wait(10), options)
        metrics = instrument(queue, registry)
        recorder = Recorder(queue)
        queue.push_tasks([Task("k", n) for n in range(3)])
        queue.start()
        recorder.wait(lambda r: len(r.claimed) == 1)
        # One runs; the loop is held back for the slot, a few times a second.
        assert db.scalar("SELECT count(*) FROM {schema}.tasks WHERE attempts_elapsed = 0") == 2
        # What is measured is how often a held-back loop asks in a while: no event to await.
        time.sleep(0.6)
        found = samples(registry)
        throttled = value(found, "pgqueue_throttled_total", kind="k", reason="concurrency")
        assert 1 <= throttled <= 6, throttled
        assert value(found, "pgqueue_kind_limit", kind="k", limit="global_concurrency") == 1
        assert value(found, "pgqueue_kind_limit", kind="k", limit="rate_per_second") == 100
        queue.set_limits("k", global_concurrency=3)
        recorder.wait(lambda r: len(r.claimed) == 3)
        assert (
            value(samples(registry), "pgqueue_kind_limit", kind="k", limit="global_concurrency")
            == 3
        )
        release.set()
        metrics.close()


def test_a_group_rate_limit_holds_per_group(queue: Queue, db: Database) -> None:
    options = KindOptions(attempt_timeout=5, group_rate_limit=RateLimit(2, per=60.0))
    pushed = queue.push_tasks(
        [Task("k", n, group="a") for n in range(4)]
        + [Task("k", 10, group="b"), Task("k", 11), Task("k", 12)]
    )
    first = limited(queue, options)
    # Two of group a (its burst), the one of b, and the ungrouped ones.
    assert sorted(ids(first)) == sorted([pushed[0], pushed[1], pushed[4], pushed[5], pushed[6]])
    assert limited(queue, options).rows == []  # a is out of tokens
    assert db.fetch("SELECT task_group, tokens FROM {schema}.group_buckets ORDER BY 1") == [
        ("a", 0.0),
        ("b", 1.0),
    ]
    # Half a minute later group a has one token again.
    db.fetch("UPDATE {schema}.group_buckets SET refilled_at = refilled_at - interval '30 s'")
    assert ids(limited(queue, options)) == [pushed[2]]
    # A bucket full again is dropped.
    db.fetch("UPDATE {schema}.group_buckets SET refilled_at = refilled_at - interval '1 hour'")
    limited(queue, options)
    assert db.fetch("SELECT task_group FROM {schema}.group_buckets") == [("a",)]


def test_set_limits_is_audited_and_validated(queue: Queue, db: Database) -> None:
    from pgqueue import InvalidOptions, UnknownKind

    overrides = queue.set_limits("k", rate_limit=RateLimit(5, per=60), actor="ops")
    assert overrides.rate_limit == RateLimit(5, per=60.0, burst=5)
    assert overrides.global_concurrency is None and overrides.overridden_at is not None
    queue.set_limits("k", global_concurrency=2)
    assert queue.get_limits("k").rate_limit is not None  # left out: kept
    queue.clear_limits("k", actor="ops")
    assert not queue.get_limits("k").any
    changes = queue.limit_changes("k")
    assert [(actor, what) for _, actor, what in changes] == [
        (
            "ops",
            {
                "rate_limit": None,
                "global_concurrency": None,
                "group_concurrency": None,
                "group_rate_limit": None,
            },
        ),
        (None, {"global_concurrency": 2}),
        ("ops", {"rate_limit": {"n": 5, "per": 60.0, "burst": 5}}),
    ]
    with pytest.raises(UnknownKind):
        queue.set_limits("nope", global_concurrency=1)
    with pytest.raises(InvalidOptions, match=r"^group_rate_limit must"):
        queue.set_limits("k", group_rate_limit=5)
    with pytest.raises(InvalidOptions, match=r"^global_concurrency must"):
        queue.set_limits("k", global_concurrency=0)
    assert db.scalar("SELECT count(*) FROM {schema}.limit_changes") == 3


def test_an_operator_overrides_the_group_rate_limit(queue: Queue, db: Database) -> None:
    """A kind with no limit in its code gets a group rate limit from an operator: claims
    obey it at once, per group, until it is cleared."""
    options = KindOptions(attempt_timeout=5)
    queue.push_tasks([Task("k", n, group=f"g{n % 2}") for n in range(10)])
    overrides = queue.set_limits("k", group_rate_limit=RateLimit(2, per=60.0), actor="ops")
    assert overrides.group_rate_limit == RateLimit(2, per=60.0, burst=2)
    assert queue.get_limits("k").group_rate_limit == RateLimit(2, per=60.0, burst=2)
    first = limited(queue, options)
    assert len(first.rows) == 4  # two per group
    assert first.limits.group_rate_limit == RateLimit(2, per=60.0, burst=2)
    held = limited(queue, options)
    assert held.rows == [] and held.blocked
    queue.set_limits("k", group_rate_limit=None)
    assert len(limited(queue, options).rows) == 6
    assert next(what for _, _, what in queue.limit_changes("k")) == {"group_rate_limit": None}
