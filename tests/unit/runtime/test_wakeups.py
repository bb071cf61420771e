"""The wake-up protocol of concurrent pushes (pgqueue/runtime/wakeups.py), step by step."""

from __future__ import annotations

from pgqueue.runtime.wakeups import PushWakeups


def test_a_lone_push_notifies_itself_and_owes_nothing() -> None:
    wakeups = PushWakeups()
    assert wakeups.begin("k") is True
    assert wakeups.end("k", True, committed=True) is False
    assert wakeups.begin("k") is True  # and the next lone push notifies itself too


def test_pushes_during_a_notifying_one_are_quiet_and_one_trailing_notify_covers_them() -> None:
    wakeups = PushWakeups()
    leader = wakeups.begin("k")
    quiet = [wakeups.begin("k") for _ in range(3)]
    assert leader is True and quiet == [False, False, False]
    assert wakeups.begin("other") is True  # kinds do not share
    assert wakeups.end("k", True, committed=True) is False
    assert wakeups.end("k", False, committed=True) is True  # the first to commit sends
    assert wakeups.end("k", False, committed=True) is False  # the others are covered
    assert wakeups.owed("k") is True  # one notify for both commits so far
    assert wakeups.begin("k") is False  # a push while the sender sends is quiet too
    assert wakeups.end("k", False, committed=True) is False
    assert wakeups.end("k", False, committed=True) is False
    assert wakeups.owed("k") is True  # those committed after the first notify began: another
    assert wakeups.owed("k") is False  # nothing owed: the sender is done
    assert wakeups.begin("k") is True  # back to notifying itself


def test_a_quiet_push_that_rolled_back_owes_nothing() -> None:
    wakeups = PushWakeups()
    assert wakeups.begin("k") is True
    assert wakeups.begin("k") is False
    assert wakeups.end("k", False, committed=False) is False
    assert wakeups.end("k", True, committed=False) is False
    assert wakeups.begin("k") is True


def test_a_failed_sender_leaves_the_kind_to_the_next_push() -> None:
    wakeups = PushWakeups()
    wakeups.begin("k")
    assert wakeups.begin("k") is False
    wakeups.end("k", True, committed=True)
    assert wakeups.end("k", False, committed=True) is True
    wakeups.abandon("k")
    assert wakeups.begin("k") is True
