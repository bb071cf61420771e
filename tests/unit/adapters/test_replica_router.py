"""Replica routing decisions without a database."""

from __future__ import annotations

import math

import pytest

from pgqueue.adapters.replica import Replica, ReplicaRouter


def router(**kwargs: float) -> ReplicaRouter:
    settings = {"max_lag": 5.0, "lag_check_period": 1.0, "retry_after": 10.0, **kwargs}
    return ReplicaRouter([Replica("a", None), Replica("b", None)], **settings)


def test_replicas_take_turns_and_a_failed_one_sits_out_retry_after() -> None:
    r = router()
    a, b = r.replicas
    assert r.candidates(0.0) == [a, b]
    assert r.candidates(0.0) == [b, a]
    r.mark_down(a, 100.0, OSError("gone"))
    assert r.candidates(105.0) == [b]
    assert r.candidates(105.0) == [b]
    assert a in r.candidates(110.0)
    assert r.needs_lag_check(a, 110.0)  # measured again before it serves


def test_lag_decides_whether_a_replica_may_serve() -> None:
    r = router()
    a, _ = r.replicas
    assert not r.usable(a)  # never measured
    r.record_lag(a, [(True, 4.9)], now=0.0)
    assert r.usable(a)
    assert not r.needs_lag_check(a, 0.5)
    assert r.needs_lag_check(a, 1.0)
    r.record_lag(a, [(True, 5.1)], now=1.0)
    assert not r.usable(a)
    r.record_lag(a, [(False, 0.0)], now=2.0)  # promoted: no longer follows the primary
    assert a.lag == math.inf and not r.usable(a)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_lag"):
        router(max_lag=-1.0)
