"""``Queue`` and ``AsyncQueue`` offer the same operations with the same signatures and docs.

Both build every operation from ``QueueBase``; each facade method only runs the operation on
its executor (blocking, or awaited). This test keeps the two from drifting apart again (they
had: ``wait_listening`` took a timeout only in one, ``stop`` turned a drain into an abort only
in the other).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pgqueue import AsyncQueue, Queue

# Methods whose async form is not a coroutine function: no I/O, the same plain call in both.
PLAIN_IN_BOTH = {
    "task",
    "add_periodic",
    "declare_kind",
    "longest_attempt_timeout",
    "register_kind",
    "subscribe",
}


def public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("_") and not inspect.isclass(member)
    }


def comparable(signature: inspect.Signature) -> list[tuple[str, Any, Any, Any]]:
    return [
        (p.name, p.kind, p.default, str(p.annotation).replace("AsyncQueue", "Queue"))
        for p in signature.parameters.values()
    ]


def test_both_facades_take_the_same_constructor_arguments() -> None:
    assert comparable(inspect.signature(Queue.__init__)) == comparable(
        inspect.signature(AsyncQueue.__init__)
    )


def test_both_facades_offer_the_same_methods() -> None:
    assert set(public_methods(Queue)) == set(public_methods(AsyncQueue))


def test_every_method_has_the_same_signature_and_docs() -> None:
    sync, async_ = public_methods(Queue), public_methods(AsyncQueue)
    for name in sorted(sync):
        a, b = inspect.signature(sync[name]), inspect.signature(async_[name])
        assert comparable(a) == comparable(b), name
        assert str(a.return_annotation) == str(b.return_annotation).replace("AsyncQueue", "Queue")
        assert inspect.getdoc(sync[name]) == inspect.getdoc(async_[name]), name


def test_every_method_that_talks_to_the_database_is_awaitable_in_the_async_facade() -> None:
    plain = {
        name
        for name, method in public_methods(AsyncQueue).items()
        if not inspect.iscoroutinefunction(method)
    }
    assert plain == PLAIN_IN_BOTH
    assert not any(
        inspect.iscoroutinefunction(getattr(Queue, name)) for name in public_methods(Queue)
    )
