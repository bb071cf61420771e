"""Bad flow-control input is refused with an error naming the field, before any SQL runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pgqueue import InvalidOptions, InvalidTask, KindOptions, RateLimit, Task
from pgqueue.base import QueueBase
from pgqueue.store import operations
from pgqueue.store.queries import Queries


def opts(**kwargs: Any) -> KindOptions:
    return KindOptions(attempt_timeout=5.0, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((0,), {}, "RateLimit.n"),
        ((-5,), {}, "RateLimit.n"),
        (("10",), {}, "RateLimit.n"),
        ((True,), {}, "RateLimit.n"),
        ((float("nan"),), {}, "RateLimit.n"),
        ((float("inf"),), {}, "RateLimit.n"),
        ((None,), {}, "RateLimit.n"),
        ((10,), {"per": 0}, "RateLimit.per"),
        ((10,), {"per": -1.0}, "RateLimit.per"),
        ((10,), {"per": "1s"}, "RateLimit.per"),
        ((10,), {"per": timedelta(seconds=1)}, "RateLimit.per"),
        ((10,), {"per": 1e12}, "RateLimit.per"),
        ((10,), {"burst": 0}, "RateLimit.burst"),
        ((10,), {"burst": -3}, "RateLimit.burst"),
        ((10,), {"burst": 2.5}, "RateLimit.burst"),
        ((10,), {"burst": True}, "RateLimit.burst"),
    ],
)
def test_bad_rate_limits_are_refused(args: Any, kwargs: Any, field: str) -> None:
    with pytest.raises(InvalidOptions, match=rf"^{field} must"):
        RateLimit(*args, **kwargs)


def test_a_rate_limit_has_a_bucket_of_its_count_by_default() -> None:
    assert RateLimit(50).capacity == 50 and RateLimit(50).per_second == 50
    assert RateLimit(0.5, per=1).capacity == 1
    assert RateLimit(5, per=60, burst=2).capacity == 2
    assert RateLimit.parse("10/s") == RateLimit(10, per=1.0)
    assert RateLimit.parse("600/m") == RateLimit(600, per=60.0)
    assert RateLimit.parse("5/h") == RateLimit(5, per=3600.0)
    assert RateLimit.parse("3/2.5s") == RateLimit(3, per=2.5)
    assert RateLimit.parse("7") == RateLimit(7, per=1.0)
    for text in ("ten/s", "10/fortnight", "0/s", "-1/s", "10/0s", ""):
        with pytest.raises(InvalidOptions):
            RateLimit.parse(text)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"global_concurrency": 0}, "global_concurrency"),
        ({"global_concurrency": -1}, "global_concurrency"),
        ({"global_concurrency": True}, "global_concurrency"),
        ({"global_concurrency": 2.0}, "global_concurrency"),
        ({"group_concurrency": 0}, "group_concurrency"),
        ({"group_concurrency": False}, "group_concurrency"),
        ({"priority": 101}, "priority"),
        ({"priority": -101}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": 1.0}, "priority"),
        ({"rate_limit": 50}, "rate_limit"),
        ({"rate_limit": "50/s"}, "rate_limit"),
        ({"group_rate_limit": 5}, "group_rate_limit"),
        ({"limiter": object()}, "limiter"),
        ({"limiter": lambda kind, wanted: wanted}, "limiter"),
    ],
)
def test_bad_kind_options_are_refused_at_registration(options: Any, field: str) -> None:
    queue = QueueBase()
    with pytest.raises(InvalidOptions, match=rf"^{field} must"):
        queue.declare_kind("k", opts(**options))
    assert "k" not in queue.registry


@pytest.mark.parametrize(
    ("task", "field"),
    [
        (Task("k", priority=101), "priority"),
        (Task("k", priority=-101), "priority"),
        (Task("k", priority=True), "priority"),  # type: ignore[arg-type]
        (Task("k", priority=1.5), "priority"),  # type: ignore[arg-type]
        (Task("k", priority="1"), "priority"),  # type: ignore[arg-type]
        (Task("k", group="g" * 513), "group"),
        (Task("k", group="é" * 257), "group"),  # 514 bytes
        (Task("k", group=42), "group"),  # type: ignore[arg-type]
        (Task("k", group="a\x00b"), "group"),
    ],
)
def test_bad_tasks_are_refused_before_any_sql(task: Task, field: str) -> None:
    queue = QueueBase()
    queue.declare_kind("k", opts())
    queue.declare_kind("capped", opts(max_pending=5))
    capped = Task("capped", task.payload, group=task.group, priority=task.priority)
    for build in (
        lambda: queue._push_one_op(task, 0),
        lambda: queue._push_one_op(capped, 0),
        lambda: operations.push_tasks(queue.registry, queue.queries, [Task("k"), task]),
    ):
        with pytest.raises(InvalidTask, match=rf"^{field} "):
            build()


def test_a_group_at_the_size_limit_is_accepted() -> None:
    queue = QueueBase()
    queue.declare_kind("k", opts())
    queue._push_one_op(Task("k", group="g" * 512, priority=-100), 0)
    queue._push_one_op(Task("k", group="", priority=100), 0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rate_limit": 10}, "rate_limit"),
        ({"global_concurrency": 0}, "global_concurrency"),
        ({"global_concurrency": True}, "global_concurrency"),
        ({"group_concurrency": -2}, "group_concurrency"),
        ({"group_concurrency": "3"}, "group_concurrency"),
        ({"actor": 5}, "actor"),
    ],
)
def test_bad_overrides_are_refused_before_any_sql(changes: Any, field: str) -> None:
    with pytest.raises(InvalidOptions, match=rf"^{field} must"):
        operations.set_kind_limits(Queries(), "k", True, **changes)


def test_good_options_register() -> None:
    class Limiter:
        def allow(self, kind: str, wanted: int) -> int:
            return wanted

    queue = QueueBase()
    queue.declare_kind(
        "k",
        opts(
            priority=-100,
            rate_limit=RateLimit(0.5, per=1.0, burst=1),
            global_concurrency=1,
            group_concurrency=1,
            limiter=Limiter(),
        ),
    )
    assert queue.registry.get("k").options.limited
    assert not opts().limited
