"""Where a kind's claims start reading its open tasks (pgqueue/runtime/floors.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pgqueue.runtime.floors import FULL_SCAN_PERIOD, MARGIN, ClaimFloor

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_floor_until_a_read_from_the_head() -> None:
    floor = ClaimFloor(Clock())
    assert floor.current() is None
    # A claim from a floor that does not exist cannot happen; a claim from the head sets it.
    floor.claimed(None, 3, 10, T0, T0 + timedelta(seconds=5))
    assert floor.current() == T0 + timedelta(seconds=5) - MARGIN  # all due by then claimed


def test_a_full_batch_leaves_the_floor_at_the_oldest_due_task() -> None:
    floor = ClaimFloor(Clock())
    floor.claimed(None, 10, 10, T0, T0 + timedelta(seconds=5))
    assert floor.current() == T0 - MARGIN
    # The next claim reads from there and finds the next oldest.
    floor.claimed(floor.current(), 10, 10, T0 + timedelta(seconds=1), T0 + timedelta(seconds=6))
    assert floor.current() == T0 + timedelta(seconds=1) - MARGIN


def test_a_batch_of_prioritised_tasks_or_a_paused_kind_moves_nothing() -> None:
    floor = ClaimFloor(Clock())
    floor.claimed(None, 10, 10, T0, T0)
    floor.claimed(floor.current(), 10, 10, None, T0 + timedelta(seconds=9))  # priority rows
    assert floor.current() == T0 - MARGIN
    floor.claimed(floor.current(), 0, 10, None, None)  # paused: the claim read nothing
    assert floor.current() == T0 - MARGIN


def test_the_head_is_read_again_every_full_scan_period() -> None:
    clock = Clock()
    floor = ClaimFloor(clock)
    floor.claimed(None, 1, 10, T0, T0)
    clock.now += FULL_SCAN_PERIOD - 0.01
    assert floor.current() is not None
    floor.claimed(floor.current(), 1, 10, T0, T0 + timedelta(seconds=1))  # floored: no refresh
    clock.now += 0.02
    assert floor.current() is None  # a read from the head is due
    floor.claimed(None, 1, 10, None, T0 + timedelta(seconds=2))
    assert floor.current() == T0 + timedelta(seconds=2) - MARGIN


def test_a_poll_from_the_head_refreshes_the_floor_never_past_the_clock() -> None:
    floor = ClaimFloor(Clock())
    floor.polled(T0 + timedelta(hours=1), T0)  # only a delayed task is open: the clock bounds it
    assert floor.current() == T0 - MARGIN
    floor.polled(None, T0 + timedelta(seconds=3))  # nothing open
    assert floor.current() == T0 + timedelta(seconds=3) - MARGIN
    floor.polled(T0 - timedelta(seconds=7), T0 + timedelta(seconds=3))  # an old due task
    assert floor.current() == T0 - timedelta(seconds=7) - MARGIN


def test_a_reset_makes_the_next_read_start_at_the_head_and_the_one_after_at_its_finding() -> None:
    floor = ClaimFloor(Clock())
    floor.claimed(None, 10, 10, T0, T0 + timedelta(seconds=5))
    assert floor.current() == T0 - MARGIN
    floor.reset()  # a wait marked a task a claim may have skipped below the floor
    assert floor.current() is None
    floor.claimed(None, 10, 10, T0 - timedelta(seconds=30), T0 + timedelta(seconds=6))
    assert floor.current() == T0 - timedelta(seconds=30) - MARGIN


def test_a_task_committed_below_where_reads_start_sends_the_next_read_to_the_head() -> None:
    floor = ClaimFloor(Clock())
    floor.due_at((T0 - timedelta(hours=1)).timestamp())  # no floor yet: nothing to move
    assert floor.current() is None
    floor.claimed(None, 10, 10, T0, T0 + timedelta(seconds=5))
    start = T0 - MARGIN
    assert floor.current() == start
    floor.due_at(start.timestamp())  # where reads start: found there
    floor.due_at((T0 + timedelta(seconds=3)).timestamp())  # above the floor: found
    assert floor.current() == start
    floor.due_at((start - timedelta(milliseconds=1)).timestamp())  # below: hidden
    assert floor.current() is None
    floor.claimed(None, 10, 10, T0 - timedelta(seconds=2), T0 + timedelta(seconds=6))
    assert floor.current() == T0 - timedelta(seconds=2) - MARGIN


def test_a_reset_survives_a_claim_that_was_in_flight_when_it_came() -> None:
    floor = ClaimFloor(Clock())
    floor.claimed(None, 10, 10, T0, T0 + timedelta(seconds=5))
    used = floor.current()
    floor.due_at((T0 - timedelta(seconds=30)).timestamp())
    floor.claimed(used, 3, 10, None, T0 + timedelta(seconds=6))  # read from the old floor
    assert floor.current() is None
