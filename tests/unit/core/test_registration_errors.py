"""Registration and single-push errors name the cause and the fix, before any SQL runs."""

from __future__ import annotations

from typing import Any

import pytest

from pgqueue import Envelope, InvalidOptions, InvalidTask, KindOptions
from pgqueue.base import QueueBase
from pgqueue.store.operations import push_tasks
from pgqueue.task import Task


def opts(**kwargs: Any) -> KindOptions:
    return KindOptions(attempt_timeout=5.0, **kwargs)


def no_arguments() -> None: ...


def two_arguments(envelope: Envelope, extra: Any) -> None: ...


def handler(envelope: Envelope) -> None: ...


def handler_with_default(envelope: Envelope, extra: int = 1) -> None: ...


async def async_handler(envelope: Envelope) -> None: ...


def variadic(*args: Any, **kwargs: Any) -> None: ...


class CallableHandler:
    def __call__(self, envelope: Envelope) -> None: ...


def test_handler_with_the_wrong_signature_is_refused_at_registration() -> None:
    queue = QueueBase()
    with pytest.raises(InvalidOptions) as info:
        queue.register_kind("k", no_arguments, opts())
    assert str(info.value) == (
        "handler of kind 'k' must accept one positional argument (envelope), but "
        "no_arguments() cannot be called that way (too many positional arguments); "
        "define it as def no_arguments(envelope): ..."
    )
    with pytest.raises(InvalidOptions, match=r"handler of kind 'k' must accept one positional"):
        queue.register_kind("k", two_arguments, opts())
    with pytest.raises(InvalidOptions, match=r"must accept one positional"):
        queue.register_kind("k", lambda: None, opts())
    assert "k" not in queue.registry


@pytest.mark.parametrize(
    "fn", [handler, handler_with_default, async_handler, variadic, CallableHandler(), print]
)
def test_handlers_that_take_the_envelope_register(fn: Any) -> None:
    queue = QueueBase()
    queue.register_kind("k", fn, opts())
    assert "k" in queue.registry


def test_hooks_are_checked_too() -> None:
    queue = QueueBase()
    with pytest.raises(InvalidOptions) as info:
        queue.register_kind("k", handler, opts(failure=handler))
    assert str(info.value).startswith(
        "failure hook of kind 'k' must accept two positional arguments (envelope and error)"
    )
    with pytest.raises(InvalidOptions, match="before hook of kind 'k' must accept one"):
        queue.register_kind("k", handler, opts(before=two_arguments))
    with pytest.raises(InvalidOptions, match="success hook of kind 'k'"):
        queue.declare_kind("k", opts(success=no_arguments))
    queue.register_kind("k", handler, opts(failure=two_arguments, after=handler))


def test_a_single_push_error_does_not_name_a_batch_index() -> None:
    queue = QueueBase()
    queue.declare_kind("k", opts())
    queue.declare_kind("capped", opts(max_pending=10))
    for kind in ("k", "capped"):
        with pytest.raises(InvalidTask) as info:
            queue._push_one_op(Task(kind, {"x": object()}), 0)
        assert str(info.value) == (
            "task payload is not JSON-serialisable: Object of type object is not JSON serializable"
        )
    with pytest.raises(InvalidTask) as info:
        queue._push_one_op(Task("k", "x" * 1_100_000), 0)
    assert str(info.value).startswith("task payload is 1100002 bytes of JSON; the limit is")
    with pytest.raises(InvalidTask) as info:
        push_tasks(queue.registry, queue.queries, [Task("k", 1), Task("k", {1, 2})])
    assert str(info.value).startswith("task 1: task payload is not JSON-serialisable")


def test_a_missing_extra_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import pgqueue.migrate as migrate
    from pgqueue.errors import MissingExtra

    monkeypatch.setitem(sys.modules, "alembic", None)  # as if not installed
    with pytest.raises(MissingExtra) as info:
        migrate.upgrade("postgresql://app@db/app")
    assert str(info.value) == (
        "pgqueue migrate needs the 'migrations' extra, which is not installed: "
        'pip install "pgqueue-tasks[migrations]"'
    )
    assert isinstance(info.value, ImportError)
